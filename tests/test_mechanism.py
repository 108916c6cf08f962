"""The mechanism experiment (gap_study.stages.mechanism): which runs it makes, which test images it
scores, the metrics of one run's shift grid, and a run as a task, trained or taken from the
train stage."""

import math

import numpy as np
import pytest
import torch
from builders import TINY_MODEL

from gap_study.measures.finite import NonFiniteError
from gap_study.measures.metrics import grid_offsets
from gap_study.nets.checkpoints import checkpoint_payload
from gap_study.nets.models import build_model
from gap_study.pipeline.params import MechanismParams, ParamsError, TrainParams
from gap_study.pipeline.paths import RunId
from gap_study.stages.mechanism import (
    Cell,
    MechanismRun,
    grid_images,
    mechanism_runs,
    mechanism_task,
    score_grid,
)
from gap_study.stages.train import train_run

PLAN = MechanismParams(heads=["dense", "gap"], downsample=["max", "blurmax"],
                       padding=["zeros", "circular"], train_shift=None, test_images=40)
TRAIN = TrainParams(seeds=[0, 1], epochs=1, batch_size=32, schedule="cosine", drop_last=True,
                    weight_decay=0.0, validation_batch_size=512, fractions=[0.5, 1.0], shift=[0, 2])


def test_every_head_trains_once_per_cell_and_seed_as_a_main_run():
    runs = mechanism_runs(PLAN, TINY_MODEL, TRAIN)
    assert sorted((r.head, r.cell.name, r.run.seed) for r in runs) == sorted(
        (h, f"{d}-{p}", s) for h in PLAN.heads for d in PLAN.downsample for p in PLAN.padding
        for s in TRAIN.seeds)
    assert {r.run for r in runs} == {RunId(1.0, 0, 0), RunId(1.0, 0, 1)}


def test_the_model_sections_cell_comes_from_the_train_stage_and_the_costliest_goes_first():
    runs = mechanism_runs(PLAN, TINY_MODEL, TRAIN)  # TINY_MODEL: max, zeros
    assert [r.main for r in runs] == [r.cell == Cell("max", "zeros") for r in runs]
    assert runs[0].cell == Cell("blurmax", "circular")
    assert all(r.main for r in runs[-4:])  # the short runs (no training) last
    blurred = mechanism_runs(PLAN, TINY_MODEL.model_copy(update={"downsample": "blurmax"}), TRAIN)
    assert {r.cell for r in blurred if r.main} == {Cell("blurmax", "zeros")}


def test_the_shift_trained_cell_is_the_model_sections_backbone_at_the_training_shift():
    plan = PLAN.model_copy(update={"downsample": ["max", "blurmax", "aps"], "train_shift": 1})
    runs = mechanism_runs(plan, TINY_MODEL, TRAIN)  # TRAIN.shift [0, 2]: 1 is trained here
    shifted = [r for r in runs if r.run.train_shift == 1]
    assert sorted((r.head, r.run.seed) for r in shifted) == [
        (h, s) for h in sorted(PLAN.heads) for s in TRAIN.seeds]
    assert {r.cell for r in shifted} == {Cell("max", "zeros")}
    assert not any(r.main for r in shifted)
    assert len(runs) == len(PLAN.heads) * len(TRAIN.seeds) * (3 * 2 + 1)
    assert len({r.label for r in runs}) == len(runs)  # unique: the tasks' and arrays' names
    assert shifted[0].label == "dense-max-zeros-shift_1-seed_0"
    # the costliest first: APS and blur before max, circular before zeros
    assert [r.cell for r in runs[:8]] == [Cell("blurmax", "circular")] * 4 + [
        Cell("aps", "circular")] * 4


def test_a_shift_the_train_stage_trained_is_taken_from_its_checkpoints():
    runs = mechanism_runs(PLAN.model_copy(update={"train_shift": 2}), TINY_MODEL, TRAIN)
    taken = [r for r in runs if r.main]
    assert {(r.cell, r.run.train_shift) for r in taken} == {(Cell("max", "zeros"), 0),
                                                           (Cell("max", "zeros"), 2)}
    assert len(taken) == 2 * len(PLAN.heads) * len(TRAIN.seeds) and all(r.main for r in runs[-8:])


def test_grid_images_are_a_fixed_stratified_subsample_or_all():
    labels = np.repeat(np.arange(4), 25)
    chosen = grid_images(labels, 40, seed=3)
    assert len(chosen) == 40 and np.bincount(labels[chosen]).tolist() == [10] * 4
    assert np.array_equal(chosen, grid_images(labels, 40, seed=3))
    assert not np.array_equal(chosen, grid_images(labels, 40, seed=4))
    assert np.array_equal(grid_images(labels, None, seed=3), np.arange(100))


def test_more_grid_images_than_the_test_set_holds_are_refused_naming_the_key():
    labels = np.repeat(np.arange(4), 25)
    assert len(grid_images(labels, 100, seed=0)) == 100  # exactly all is fine
    with pytest.raises(ParamsError, match=r"mechanism\.test_images = 1000 is more than the 100 "
                       r"test images .* at most 100, or null"):
        grid_images(labels, 1000, seed=0)


def test_score_grid_separates_whole_cell_from_other_shifts():
    # two images of classes 0 and 1, right exactly at the offsets that are multiples of 2
    offsets = grid_offsets(2)
    aligned = np.array([dx % 2 == 0 and dy % 2 == 0 for dx, dy in offsets])
    labels = np.array([0, 1])
    predictions = np.where(aligned, labels[:, None], 1 - labels[:, None]).astype(np.int8)
    row, grid = score_grid(predictions, labels, max_shift=2, stride=2)
    assert row["test_accuracy"] == 1.0
    assert row["aligned_shift_accuracy"] == 1.0 and row["other_shift_accuracy"] == 0.0
    assert row["shift_accuracy_mean"] == pytest.approx(aligned.mean())
    share = aligned.mean()
    assert row["consistency_exact"] == pytest.approx(share**2 + (1 - share) ** 2)
    assert 0 < row["flip_rate_all_pairs"] < 1
    assert len(grid) == len(offsets)


def _task(item, small, learning_rate=0.01):
    return mechanism_task(item, data=small, architecture=TINY_MODEL, settings=TRAIN,
                          learning_rates={"gap": learning_rate}, test_index=np.arange(30),
                          max_shift=2, batch_size=64, device="cpu")


@pytest.mark.parametrize("downsample", ["blurmax", "aps"])
def test_a_trained_run_is_the_training_of_its_cell_and_never_sees_a_test_image(small,
                                                                             downsample):
    # trained twice, bit for bit the same weights: aps's choice of phase is deterministic too
    run = MechanismRun("gap", Cell(downsample, "circular"), RunId(1.0, 0, 0), main=False)
    result = _task((run, None), small)
    expected, _ = train_run(Cell(downsample, "circular").model(TINY_MODEL).to_config(
        "gap", small), small.without_test(), run.run, TRAIN, 0.01, device="cpu",
        progress=False)
    assert result.checkpoint["config"]["downsample"] == downsample
    assert result.checkpoint["config"]["padding"] == "circular"
    for name, tensor in expected.state_dict().items():
        assert torch.equal(result.checkpoint["state_dict"][name], tensor), name
    assert result.row["source"] == "trained here" and result.row["test_images"] == 30
    assert result.predictions.shape == (30, 25) and result.history is not None


def test_a_shift_trained_run_trains_with_its_shift_and_is_keyed_by_it(small):
    run = MechanismRun("gap", Cell("max", "zeros"), RunId(1.0, 2, 0), main=False)
    result = _task((run, None), small)
    expected, _ = train_run(TINY_MODEL.to_config("gap", small), small.without_test(), run.run,
                            TRAIN, 0.01, device="cpu", progress=False)
    for name, tensor in expected.state_dict().items():
        assert torch.equal(result.checkpoint["state_dict"][name], tensor), name
    assert result.row["train_shift"] == 2 and set(result.grid.train_shift) == {2}
    centred = _task((MechanismRun("gap", Cell("max", "zeros"), RunId(1.0, 0, 0), main=False),
                     None), small)
    assert not torch.equal(centred.checkpoint["state_dict"]["head.fc.weight"],
                           result.checkpoint["state_dict"]["head.fc.weight"])


def test_a_main_run_is_scored_from_its_checkpoint_without_training(small):
    run = MechanismRun("gap", Cell("max", "zeros"), RunId(1.0, 0, 0), main=True)
    model, _ = train_run(TINY_MODEL.to_config("gap", small), small.without_test(), run.run,
                         TRAIN, 0.01, device="cpu", progress=False)
    result = _task((run, checkpoint_payload(model)), small, learning_rate=float("nan"))
    assert result.checkpoint is None and result.history is None
    assert result.row["source"] == "main run"
    assert result.row["test_accuracy"] == result.grid.query("dx == 0 and dy == 0").accuracy.item()


def test_a_main_run_whose_logits_are_not_finite_fails_naming_the_run(small):
    torch.manual_seed(0)
    payload = checkpoint_payload(build_model(TINY_MODEL.to_config("gap", small)))
    weight = next(k for k in payload["state_dict"] if k.endswith("weight"))
    payload["state_dict"][weight][0] = math.inf
    run = MechanismRun("gap", Cell("max", "zeros"), RunId(1.0, 0, 2), main=True)
    with pytest.raises(NonFiniteError, match=rf"run {run.label}: logits not finite"):
        _task((run, payload), small)
