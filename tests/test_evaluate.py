"""The evaluation stage's decisions: which metrics each run gets, and whose maps are shown."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from builders import tiny_config

from gap_study.measures.finite import NonFiniteError
from gap_study.measures.localization import TWO_OBJECT_METRICS
from gap_study.nets.checkpoints import checkpoint_payload, model_from_payload
from gap_study.nets.models import build_model
from gap_study.pipeline.io import write_arrays
from gap_study.pipeline.params import EvaluateParams
from gap_study.pipeline.paths import RunId
from gap_study.stages.evaluate import (
    EvaluationData,
    cam_example_run,
    evaluate_run,
    evaluate_task,
    evaluation_tables,
    example_cams,
    example_maps,
    feature_map_record,
    per_image_values,
)

SETTINGS = EvaluateParams(max_shift=2, batch_size=64, seed=0)
GRID_METRICS = ["shift_accuracy_mean", "consistency", "flip_rate", "pointing_accuracy",
                *TWO_OBJECT_METRICS]
CAM_POINTING = {"pointing_accuracy", "pointing_accuracy_shifted", "pointing_two_objects"}
# metrics whose run value is computed apart from its per-image values: their mean may differ
# in the last bits. test_loss is float32 summed in another order (relative error at most about
# N * 2^-24 = 6e-6 for 100 images); the others are float64 means of means
ROUNDED = {"test_loss": 1e-5, "shift_accuracy_mean": 1e-12, "flip_rate_all_pairs": 1e-12}


@pytest.fixture(scope="module")
def data(small):
    return EvaluationData.on(small, torch.device("cpu"))


def _model(head):
    torch.manual_seed(0)
    return build_model(tiny_config(head)).eval()


def test_a_run_on_part_of_the_training_set_gets_the_centred_metrics_only(data):
    result = evaluate_run(_model("gap"), RunId(0.5, 0, 1), data, SETTINGS, full_fraction=1.0)
    assert result.grid is None
    assert result.row["train_images"] == 100  # half of the 200 training images
    assert {"test_accuracy", "overfit_gap", "params_head"} <= set(result.row)
    assert not set(GRID_METRICS) & set(result.row)


def test_a_run_on_the_whole_training_set_gets_the_grid_and_map_metrics(data):
    result = evaluate_run(_model("gap"), RunId(1.0, 2, 1), data, SETTINGS, full_fraction=1.0)
    assert (result.row["head"], result.row["train_shift"], result.row["seed"]) == ("gap", 2, 1)
    assert all(0 <= result.row[m] <= 1 for m in GRID_METRICS)
    assert len(result.grid) == 5 * 5
    assert result.grid[["fraction", "train_shift", "seed"]].drop_duplicates().values.tolist() \
        == [[1.0, 2, 1]]


def test_dense_gets_the_pointing_references_but_no_map_of_its_own(data):
    row = evaluate_run(_model("dense"), RunId(1.0, 0, 0), data, SETTINGS, full_fraction=1.0).row
    assert math.isnan(row["pointing_accuracy"]) and math.isnan(row["pointing_accuracy_shifted"])
    assert row["pointing_centre_prior"] == 1.0  # every centred digit holds the canvas centre
    assert example_cams(_model("dense"), data, SETTINGS) is None
    assert math.isnan(row["pointing_two_objects"])
    assert 0 <= row["pointing_gradcam_two_objects"] <= 1  # Grad-CAM: every head has one
    assert 0 < row["pointing_ink_two_objects"] <= 0.5


def test_without_two_object_canvases_the_two_object_metrics_are_nan(small):
    none = dataclasses.replace(small, x_pair=small.x_pair[:0], y_pair=small.y_pair[:0],
                               box_pair=small.box_pair[:0])
    row = evaluate_run(_model("gap"), RunId(1.0, 0, 0), EvaluationData.on(none, torch.device(
        "cpu")), SETTINGS, full_fraction=1.0).row
    assert all(math.isnan(row[metric]) for metric in TWO_OBJECT_METRICS)
    assert 0 <= row["pointing_accuracy"] <= 1  # the single-object metrics are unaffected


def test_each_heads_tables_keep_its_runs_order_and_stack_the_grids_of_its_full_runs(data):
    items = [("gmp", RunId(0.5, 0, 0)), ("dense", RunId(0.5, 0, 0)), ("gmp", RunId(1.0, 0, 0)),
             ("gmp", RunId(1.0, 2, 0))]
    results = [evaluate_run(_model(head), run, data, SETTINGS, full_fraction=1.0)
               for head, run in items]
    metrics, grid = evaluation_tables(results, "gmp")
    assert metrics[["fraction", "train_shift"]].values.tolist() == [[0.5, 0], [1.0, 0], [1.0, 2]]
    assert (metrics["head"] == "gmp").all()
    assert list(grid.columns) == ["fraction", "train_shift", "seed", "dx", "dy", "radius",
                                  "accuracy"]
    assert len(grid) == 2 * 25
    assert example_maps(results, "gmp") is None  # no run here carries examples


def test_the_maps_shown_come_from_the_first_main_run():
    runs = [RunId(0.1, 0, 0), RunId(1.0, 3, 0), RunId(1.0, 0, 2), RunId(1.0, 0, 1)]
    assert cam_example_run(runs) == RunId(1.0, 0, 1)


def test_example_maps_show_four_images_centred_and_moved_by_half_the_largest_shift(data):
    examples = example_cams(_model("nin"), data, SETTINGS)
    assert examples["cams"].shape == examples["shifted_cams"].shape == (4, 32, 32)
    assert examples["shift"].tolist() == [1, -1]  # right and up
    assert (examples["shifted_boxes"] - examples["boxes"]).tolist() == [[-1, 1, -1, 1]] * 4


def test_the_feature_map_record_reads_a_checkpoints_config():
    record = feature_map_record({"config": tiny_config("gap", image_size=20).to_dict()})
    assert record["shape"] == [8, 10, 10] and record["stride"] == 2
    assert record["sum_over_average"]["factor"] == 100.0


def test_a_task_evaluates_a_checkpoint_where_it_runs_and_adds_the_examples_of_its_run(small):
    torch.manual_seed(0)
    payload = checkpoint_payload(build_model(tiny_config("gap")))
    shared = {"data": small, "settings": SETTINGS, "device": "cpu", "full_fraction": 1.0,
              "example_run": RunId(1.0, 0, 0)}
    example = evaluate_task((RunId(1.0, 0, 0), payload), **shared)
    other = evaluate_task((RunId(1.0, 0, 1), payload), **shared)
    direct = evaluate_run(model_from_payload(payload), RunId(1.0, 0, 0),
                          EvaluationData.on(small, torch.device("cpu")), SETTINGS,
                          full_fraction=1.0)
    assert example.row == direct.row and example.grid.equals(direct.grid)
    assert example.examples["cams"].shape == (4, 32, 32) and other.examples is None
    assert example.worker["cpu"] and example.worker["torch_threads"] >= 1


@pytest.mark.parametrize("head", ["gap", "dense"])
def test_every_per_image_array_averages_to_the_metric_of_its_name(data, head):
    result = evaluate_run(_model(head), RunId(1.0, 0, 0), data, SETTINGS, full_fraction=1.0)
    for metric, values in result.per_image.items():
        if metric in ROUNDED:
            assert float(values.mean()) == pytest.approx(result.row[metric], rel=ROUNDED[metric])
        else:  # the run's metric is this very mean, or a share of the same hits
            assert float(values.mean()) == result.row[metric], metric


def test_per_image_arrays_have_one_value_per_test_image_or_two_object_canvas_object(data):
    per_image = evaluate_run(_model("gap"), RunId(1.0, 0, 0), data, SETTINGS,
                             full_fraction=1.0).per_image
    objects = 2 * len(data.x_pair)
    for metric, values in per_image.items():
        assert values.shape == ((objects,) if metric.endswith("_two_objects")
                                else (len(data.x_test),)), metric
    assert per_image["test_accuracy"].dtype == np.bool_
    assert per_image["test_loss"].dtype == np.float32
    assert per_image["consistency_exact"].dtype == np.float64
    assert {"consistency", "flip_rate", "pointing_gradcam_shifted",
            "pointing_gradcam_two_objects"} | CAM_POINTING <= set(per_image)


def test_a_run_on_part_of_the_training_set_keeps_per_image_test_outcomes_only(data):
    result = evaluate_run(_model("gap"), RunId(0.5, 0, 1), data, SETTINGS, full_fraction=1.0)
    assert set(result.per_image) == {"test_accuracy", "test_loss"}


def test_a_head_without_maps_keeps_no_cam_pointing_values_but_its_grad_cams(data):
    per_image = evaluate_run(_model("dense"), RunId(1.0, 0, 0), data, SETTINGS,
                             full_fraction=1.0).per_image
    assert not CAM_POINTING & set(per_image)
    assert {"pointing_gradcam", "pointing_gradcam_two_objects"} <= set(per_image)


def test_the_per_image_file_keys_each_array_by_run_stem_and_metric(data, tmp_path):
    items = [("gap", RunId(0.5, 0, 0)), ("dense", RunId(1.0, 0, 0)), ("gap", RunId(1.0, 0, 3))]
    results = [evaluate_run(_model(head), run, data, SETTINGS, full_fraction=1.0)
               for head, run in items]
    arrays = per_image_values(results, [run for _, run in items], "gap")
    write_arrays(tmp_path / "per_image.npz", arrays)
    with np.load(tmp_path / "per_image.npz", allow_pickle=False) as stored:
        assert set(stored.files) == set(arrays)
        assert {key.split("/")[0] for key in stored.files} \
            == {"fraction_0.5-shift_0-seed_0", "fraction_1-shift_0-seed_3"}
        np.testing.assert_array_equal(stored["fraction_1-shift_0-seed_3/test_accuracy"],
                                      results[2].per_image["test_accuracy"])


def test_a_checkpoint_whose_losses_are_not_finite_fails_its_task_naming_the_run(small):
    payload = checkpoint_payload(_model("gap"))
    weight = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][weight] = torch.full_like(payload["state_dict"][weight], math.nan)
    with pytest.raises(NonFiniteError, match=r"run gap/fraction_0.5-shift_0-seed_3: train_loss, "
                       r"test_loss not finite"):
        evaluate_task((RunId(0.5, 0, 3), payload), data=small, settings=SETTINGS, device="cpu",
                      full_fraction=1.0, example_run=RunId(1.0, 0, 0))
