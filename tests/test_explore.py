"""gap_study.explore, the explorer notebook's logic, on a hand-made project: the prepared digits,
tiny trained models of dense and gap, their run records and shift grids, and one mechanism
cell for gap. The notebook itself runs on the tiny pipeline's outputs in test_pipeline.py."""

import dataclasses

import nbclient
import nbformat
import numpy as np
import pandas as pd
import pytest
from builders import copy_repository, tiny_config, tiny_settings, train_small

from gap_study.data.canvas import save_prepared
from gap_study.explore import (
    Explorer,
    PipelineNotRunError,
    Selection,
    explorer_controls,
    view_figure,
)
from gap_study.nets.checkpoints import CheckpointError, checkpoint_payload, write_checkpoint
from gap_study.pipeline.io import write_json
from gap_study.pipeline.paths import Layout, RunId

MAX_SHIFT = 2
SEEDS = [0, 1]


def _grid(seed: int, **keys) -> pd.DataFrame:
    """Accuracy per offset: ``seed / 10 + (dx + 10 * dy) / 1000``, so a cell tells its run."""
    offsets = [(dx, dy) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1)
               for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    return pd.DataFrame([{**keys, "seed": seed, "dx": dx, "dy": dy,
                          "radius": max(abs(dx), abs(dy)),
                          "accuracy": seed / 10 + (dx + 10 * dy) / 1000} for dx, dy in offsets])


@pytest.fixture(scope="module")
def project(tmp_path_factory, small) -> Layout:
    layout = Layout(tmp_path_factory.mktemp("project"))
    (layout.root / "dvc.yaml").write_text("stages: {}\n")
    (layout.root / "params.yaml").write_text("{}\n")
    save_prepared(layout.prepared, small)
    train, mechanism = {}, {}
    for head in ("dense", "gap"):
        for seed in SEEDS:
            model, _ = train_small(small, head, seed=seed, epochs=1)
            path = layout.checkpoint(head, RunId(1.0, 0, seed))
            train[f"models/{head}/{path.name}"] = write_checkpoint(path, checkpoint_payload(model))
        grids = [_grid(s, fraction=1.0, train_shift=0) for s in SEEDS]
        layout.eval_reports(head).mkdir(parents=True)
        pd.concat(grids).to_csv(layout.shift_grid(head), index=False)
    config = dataclasses.replace(tiny_config("gap"), downsample="blurmax")
    for seed in SEEDS:
        model, _ = train_small(small, seed=seed, epochs=1, config=config)
        path = layout.mechanism_checkpoint("blurmax-zeros", "gap", RunId(1.0, 0, seed))
        mechanism[path.relative_to(layout.root).as_posix()] = write_checkpoint(
            path, checkpoint_payload(model))
    layout.mechanism_reports.mkdir(parents=True)
    pd.concat([_grid(s, head="gap", downsample="blurmax", padding="zeros") for s in SEEDS]
              ).assign(accuracy=lambda g: g.accuracy + 0.5).to_csv(layout.mechanism_grid,
                                                                   index=False)
    settings = tiny_settings(1).model_copy(update={"seeds": SEEDS})
    write_json(layout.train_run, {
        "heads": ["dense", "gap"], "train": settings.model_dump(mode="json"),
        "model": {"downsample": "max", "padding": "zeros"}, "checkpoints": train})
    write_json(layout.eval_run, {"evaluate": {"max_shift": MAX_SHIFT}})
    write_json(layout.mechanism_run, {
        "mechanism": {"heads": ["gap"], "downsample": ["max", "blurmax"],
                      "padding": ["zeros"]}, "checkpoints": mechanism})
    return layout


@pytest.fixture(scope="module")
def explorer(project) -> Explorer:
    return Explorer.open(start=project.root)


def test_without_the_pipelines_outputs_it_says_what_is_missing_and_how_to_make_them(tmp_path):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    with pytest.raises(PipelineNotRunError, match=r"has not run.*data/prepared/dataset.npz"
                                                  r".*missing\. Run `dvc repro`") as error:
        Explorer.open(start=tmp_path / "notebooks")
    assert error.value._render_traceback_() == [f"PipelineNotRunError: {error.value}"]


def test_a_head_without_outputs_is_named(project):
    with pytest.raises(PipelineNotRunError, match=r"reports/eval/gmp/shift_grid\.csv"):
        Explorer.open(["gap", "gmp"], start=project.root)


def test_heads_seeds_and_cells_are_those_the_pipeline_ran(explorer):
    assert explorer.heads == ["dense", "gap"] and explorer.seeds == SEEDS
    assert explorer.cells == {"dense": ["max-zeros"], "gap": ["max-zeros", "blurmax-zeros"]}
    assert explorer.max_shift == MAX_SHIFT and explorer.class_names[3] == "3"


def test_the_grid_is_the_chosen_runs_own_from_its_stage(explorer):
    main = explorer.grid("gap", 1, "max-zeros").set_index(["dx", "dy"])["accuracy"]
    assert main[(2, -1)] == pytest.approx(0.1 + (2 - 10) / 1000)
    other = explorer.grid("gap", 0, "blurmax-zeros").set_index(["dx", "dy"])["accuracy"]
    assert other[(0, 0)] == pytest.approx(0.5) and len(other) == (2 * MAX_SHIFT + 1) ** 2


def test_a_view_moves_the_image_and_its_box_and_gives_a_probability(explorer):
    centred = explorer.view(Selection("gap", 0, "max-zeros", image=5))
    moved = explorer.view(Selection("gap", 0, "max-zeros", image=5, dx=2, dy=-1))
    assert np.array_equal(moved.image[:-1, 2:], centred.image[1:, :-2])  # right, up
    assert np.array_equal(moved.box - centred.box, [-1, 2, -1, 2])
    assert 0 < moved.true_probability <= moved.probability <= 1
    assert moved.label == explorer.class_names[int(explorer.data.y_test[5])]


def test_heads_with_a_class_map_show_cam_and_the_others_grad_cam(explorer):
    for head, name in [("gap", "CAM"), ("dense", "Grad-CAM")]:
        view = explorer.view(Selection(head, 0, "max-zeros", image=0))
        assert view.map_name == name
        size = explorer.data.image_size
        assert {k: m.shape for k, m in view.maps.items()} == {"true": (size, size),
                                                              "predicted": (size, size)}


def test_the_maps_are_of_the_true_and_of_the_predicted_class(explorer):
    views = [explorer.view(Selection("gap", 0, "max-zeros", image=i, dx=1)) for i in range(40)]
    right = next(v for v in views if v.label == v.predicted)
    wrong = next(v for v in views if v.label != v.predicted)  # one epoch: some are wrong
    assert np.array_equal(right.maps["true"], right.maps["predicted"])
    assert not np.allclose(wrong.maps["true"], wrong.maps["predicted"])


def test_an_image_outside_the_test_split_is_refused(explorer):
    with pytest.raises(ValueError, match="not in the test split"):
        explorer.view(Selection("gap", 0, "max-zeros", image=len(explorer.data.y_test)))


def test_a_checkpoint_changed_since_its_stage_wrote_it_is_refused(project, small):
    opened = Explorer.open(start=project.root)
    path = project.mechanism_checkpoint("blurmax-zeros", "gap", RunId(1.0, 0, 1))
    original = path.read_bytes()
    model, _ = train_small(small, seed=7, epochs=1)
    write_checkpoint(path, checkpoint_payload(model))
    try:
        with pytest.raises(CheckpointError, match=r"has changed.*dvc checkout"):
            opened.model("gap", 1, "blurmax-zeros")
    finally:
        path.write_bytes(original)


def test_the_figure_frames_the_current_offset_on_the_grid(explorer):
    import matplotlib.pyplot as plt

    fig = view_figure(explorer.view(Selection("gap", 1, "max-zeros", image=3, dx=1, dy=-2)))
    try:
        grid = fig.axes[3]
        (frame,) = [p for p in grid.patches if isinstance(p, plt.Rectangle)
                    and p.get_edgecolor()[:3] == (1.0, 0.0, 0.0)]
        assert frame.get_xy() == (1 + MAX_SHIFT, -2 + MAX_SHIFT)
        assert "gap, seed 1, max-zeros" in grid.get_title()
    finally:
        plt.close(fig)


def test_choosing_a_head_offers_only_its_cells(explorer):
    pytest.importorskip("ipywidgets")
    controls = explorer_controls(explorer)
    head, _, cell = controls.children[0].children
    head.value = "gap"
    assert list(cell.options) == ["max-zeros", "blurmax-zeros"]
    head.value = "dense"
    assert list(cell.options) == ["max-zeros"]


@pytest.mark.slow
def test_the_notebook_stops_with_the_message_alone_when_the_pipeline_has_not_run(tmp_path):
    copy_repository(tmp_path)  # the project's files, no outputs
    path = tmp_path / "notebooks" / "explore.ipynb"
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    with pytest.raises(nbclient.exceptions.CellExecutionError, match="has not run"):
        client.execute()
    (error,) = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs
                if o.output_type == "error"]
    assert len(error.traceback) == 1 and "Run `dvc repro`" in error.traceback[0]
