"""The study's outputs as tables: every head's evaluation and training files collected into
tidy frames (``collect_results``), split into the main runs, the learning curve and the
augmentation ablation, aggregated over seeds (``study_tables``), and the headline numbers
for ``dvc metrics`` (``headline_metrics``)."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from gap_study.data.splits import steps_per_epoch
from gap_study.measures.phases import whole_cell_shifts
from gap_study.nets.architecture import total_stride
from gap_study.pipeline.params import TrainParams
from gap_study.pipeline.paths import Layout
from gap_study.report.stats import summarize

__all__ = [
    "ABLATION_METRICS",
    "CURVE_METRICS",
    "HEADLINE_METRICS",
    "RESULT_KEYS",
    "RUN_KEYS",
    "SUMMARY_METRICS",
    "CollectedResults",
    "RunRecords",
    "StudyTables",
    "ablation_runs",
    "collect_results",
    "curve_runs",
    "head_order",
    "headline_metrics",
    "main_runs",
    "phase_accuracy",
    "phase_table",
    "radius_table",
    "results_table",
    "study_tables",
    "time_to_target",
    "with_derived_metrics",
]

RUN_KEYS = ["head", "fraction", "train_shift", "seed"]
# a row of ``results.csv``: which part of the study the run belongs to, the backbone's
# downsampling and padding, then the run within its part
RESULT_KEYS = ["part", "downsample", "padding", *RUN_KEYS]

SUMMARY_METRICS = ("params_total", "params_head", "train_accuracy", "test_accuracy",
                   "overfit_gap", "train_loss", "test_loss", "loss_gap", "shift_accuracy_mean",
                   "shift_accuracy_worst", "consistency_exact", "flip_rate_all_pairs",
                   "consistency", "flip_rate", "aligned_shift_accuracy", "other_shift_accuracy",
                   "pointing_accuracy", "pointing_accuracy_shifted", "pointing_chance",
                   "pointing_centre_prior", "pointing_centre_prior_shifted", "pointing_gradcam",
                   "pointing_gradcam_shifted", "pointing_ink_shifted", "pointing_two_objects",
                   "pointing_gradcam_two_objects", "pointing_ink_two_objects",
                   "pointing_centre_prior_two_objects", "pointing_chance_two_objects",
                   "recognised_two_objects", "pointing_gradcam_two_objects_recognised",
                   "pointing_two_objects_recognised", "pointing_ink_two_objects_recognised",
                   "epochs_to_target", "time_to_target", "seconds_per_epoch",
                   "images_per_second")
CURVE_METRICS = ("train_images", "train_accuracy", "test_accuracy", "overfit_gap", "loss_gap")
ABLATION_METRICS = ("test_accuracy", "overfit_gap", "shift_accuracy_mean", "shift_accuracy_worst",
                    "consistency", "flip_rate", "pointing_accuracy", "pointing_accuracy_shifted")
HEADLINE_METRICS = ("params_total", "params_head", "train_accuracy", "test_accuracy",
                    "test_loss", "overfit_gap", "loss_gap", "shift_accuracy_mean",
                    "shift_accuracy_worst", "consistency_exact", "flip_rate_all_pairs",
                    "consistency", "flip_rate", "aligned_shift_accuracy", "other_shift_accuracy",
                    "pointing_accuracy", "pointing_accuracy_shifted", "pointing_gradcam_shifted",
                    "pointing_two_objects", "pointing_gradcam_two_objects",
                    "recognised_two_objects", "pointing_gradcam_two_objects_recognised")

# The stages' run records: ``{"train": train/run.json, "evaluate": eval/run.json,
# "mechanism": mechanism/run.json}``.
RunRecords = dict[str, dict[str, Any]]


class CollectedResults(NamedTuple):
    """Every head's evaluation and training outputs, as ``collect_results`` reads them."""

    results: pd.DataFrame  # one row per head x fraction x train_shift x seed
    grid: pd.DataFrame  # the run keys, dx, dy, radius, accuracy
    history: pd.DataFrame  # the run keys, epoch, per-epoch accuracy, loss and timing
    records: RunRecords  # the train and evaluate stages' run records
    cams: dict[str, dict[str, np.ndarray]]  # CAM examples per head that has them
    step_times: pd.DataFrame  # the speed stage: head, round, seconds_per_step
    speed_run: dict[str, Any]  # the speed stage's run record
    tuning: pd.DataFrame  # the tune stage per head and rate: means over seeds, chosen
    tuning_runs: pd.DataFrame  # per head, rate and tuning seed: val_loss, val_accuracy
    tune_choices: pd.DataFrame  # per head: lr, val_loss, spread, fragile, at_bound, ...
    mechanism: pd.DataFrame  # the mechanism stage: one row per head, cell and seed
    mechanism_grid: pd.DataFrame  # its accuracy per offset: head, cell, seed, dx, dy, ...


class StudyTables(NamedTuple):
    """The frames the report is built from (see ``study_tables``)."""

    main: pd.DataFrame
    aggregate: pd.DataFrame
    by_radius: pd.DataFrame
    curve: pd.DataFrame
    curve_aggregate: pd.DataFrame
    ablation: pd.DataFrame
    ablation_aggregate: pd.DataFrame
    ablation_by_radius: pd.DataFrame


def head_order(heads: Sequence[str]) -> Callable[[pd.Series], pd.Series]:
    """A ``sort_values`` key that orders the ``head`` column as in ``heads``."""
    rank = {h: i for i, h in enumerate(heads)}
    return lambda column: column.map(rank) if column.name == "head" else column


def collect_results(layout: Layout, heads: Sequence[str]) -> CollectedResults:
    """Read every head's evaluation and training outputs into tidy frames.

    ``results`` holds the evaluation metrics plus ``seconds_per_epoch``/``images_per_second``,
    the median epoch of that run (metrics measured only on the whole training set are empty
    for smaller fractions); ``records`` the train and evaluate stages' run records;
    ``step_times`` the speed stage's interleaved timing, per head and round. The stages' tables
    of every head (speed, tuning, mechanism) keep the rows of ``heads``: a report of fewer
    heads than the study ran (``run_notebook -p heads``) is a report of those heads.
    """
    metrics, grids, histories, cams = [], [], [], {}
    for head in heads:
        if layout.cam_examples(head).exists():
            with np.load(layout.cam_examples(head), allow_pickle=False) as npz:
                cams[head] = dict(npz)
        metrics.append(pd.read_csv(layout.eval_metrics(head)))
        grids.append(pd.read_csv(layout.shift_grid(head)).assign(head=head))
        for path in sorted(layout.histories(head).glob("*.csv")):
            histories.append(pd.read_csv(path).assign(head=head))
    history = pd.concat(histories, ignore_index=True)
    speed = (history.groupby(RUN_KEYS, as_index=False)
             .agg(seconds_per_epoch=("epoch_seconds", "median"),
                  images_per_second=("images_per_second", "median")))
    results = pd.concat(metrics, ignore_index=True).merge(speed, on=RUN_KEYS, how="left",
                                                          validate="one_to_one")
    return CollectedResults(
        results=results.sort_values(RUN_KEYS, key=head_order(heads), ignore_index=True),
        grid=pd.concat(grids, ignore_index=True), history=history, cams=cams,
        records={"train": json.loads(layout.train_run.read_text()),
                 "evaluate": json.loads(layout.eval_run.read_text()),
                 "mechanism": json.loads(layout.mechanism_run.read_text())},
        step_times=_of_heads(layout.step_times, heads),
        speed_run=json.loads(layout.speed_run.read_text()),
        tuning=_of_heads(layout.tuning, heads),
        tuning_runs=_of_heads(layout.tuning_runs, heads),
        tune_choices=_of_heads(layout.tune_choices, heads),
        mechanism=_of_heads(layout.mechanism_runs, heads),
        mechanism_grid=_of_heads(layout.mechanism_grid, heads))


def _of_heads(path: Path, heads: Sequence[str]) -> pd.DataFrame:
    """The rows of ``heads`` in the table at ``path``."""
    table = pd.read_csv(path)
    return table[table["head"].isin(heads)].reset_index(drop=True)


def with_derived_metrics(collected: CollectedResults, *, time_target: float) -> pd.DataFrame:
    """``collected.results`` with the per-run metrics derived from the other outputs: accuracy
    at whole-cell and other shifts (``phase_accuracy``, from the shift grid and the backbone's
    stride) and ``time_to_target`` (from the histories and the speed stage)."""
    train = collected.records["train"]
    settings = TrainParams.model_validate(train["train"])
    per_epoch = steps_per_epoch(train["dataset"]["train_images"], settings.batch_size,
                                settings.drop_last)
    phases = phase_accuracy(collected.grid, total_stride(train["model"]["widths"]))
    times = time_to_target(collected.history, collected.step_times, target=time_target,
                           steps_per_epoch=per_epoch)
    return (collected.results.merge(phases, on=RUN_KEYS, how="left", validate="one_to_one")
            .merge(times, on=RUN_KEYS, how="left", validate="one_to_one"))


def results_table(results: pd.DataFrame, collected: CollectedResults) -> pd.DataFrame:
    """``reports/results.csv``: every run of the study, one row each, keyed by ``RESULT_KEYS``.

    Part ``main``: ``results`` (the evaluate stage's runs, with the derived metrics), the
    ``model`` section's downsampling and padding, scored on every test image. Part
    ``mechanism``: the mechanism stage's runs, every cell scored on its ``test_images``
    subsample; its rows of the ``model`` section's own cell are main runs scored again on
    those images, so their numbers differ from the same runs' ``main`` rows.
    """
    model = collected.records["train"]["model"]
    main = results.assign(part="main", downsample=model["downsample"],
                          padding=model["padding"],
                          test_images=collected.records["evaluate"]["dataset"]["test_images"])
    parts = [main, collected.mechanism.assign(part="mechanism")]
    # integer columns stay integers where the other part has no value (written as empty)
    table = pd.concat([part.astype({c: "Int64" for c in part.select_dtypes("integer")})
                       for part in parts], ignore_index=True)
    front = [*RESULT_KEYS, "test_images"]
    return table[front + [c for c in table.columns if c not in front]]


def main_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the main comparison: the whole training set (largest ``fraction``), trained
    centred (smallest ``train_shift``). Works on results, grids and histories alike."""
    keep = (frame["fraction"] == frame["fraction"].max()) & \
        (frame["train_shift"] == frame["train_shift"].min())
    return frame[keep].reset_index(drop=True)


def curve_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The learning curve's rows: every training fraction, trained centred."""
    return frame[frame["train_shift"] == frame["train_shift"].min()].reset_index(drop=True)


def ablation_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The augmentation ablation's rows: every training shift, on the whole training set."""
    return frame[frame["fraction"] == frame["fraction"].max()].reset_index(drop=True)


def radius_table(grid: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per run (head, fraction, train_shift, seed) and shift radius (mean over the
    offsets at that radius)."""
    return grid.groupby([*RUN_KEYS, "radius"], as_index=False)["accuracy"].mean()


def phase_accuracy(grid: pd.DataFrame, stride: int) -> pd.DataFrame:
    """Accuracy of every run on the whole training set at the shifts that move the object by
    whole feature-map cells (``aligned_shift_accuracy``: ``dx`` and ``dy`` multiples of the
    backbone's ``stride``, the centre excluded) and at all other non-zero shifts
    (``other_shift_accuracy``): one row per run (``RUN_KEYS``)."""
    aligned = whole_cell_shifts(grid, stride)
    table = (grid.loc[aligned.index].assign(aligned=aligned)
             .groupby([*RUN_KEYS, "aligned"], as_index=False)["accuracy"].mean()
             .pivot(index=RUN_KEYS, columns="aligned", values="accuracy")
             .rename(columns={True: "aligned_shift_accuracy", False: "other_shift_accuracy"})
             .reset_index().rename_axis(columns=None))
    return table.reindex(columns=[*RUN_KEYS, "aligned_shift_accuracy", "other_shift_accuracy"])


def time_to_target(history: pd.DataFrame, step_times: pd.DataFrame, *, target: float,
                   steps_per_epoch: int) -> pd.DataFrame:
    """Epochs (``epochs_to_target``) and seconds (``time_to_target``) each main run needs to
    reach validation accuracy ``target``: the first epoch at or above it, and the optimizer
    steps up to it times the head's step time from the speed stage (its best round). ``nan``
    for a run that never reaches it, which has ``time_to_target_at_least`` instead: one epoch
    more than it trained, at that step time, a lower bound of the time it would need. One row
    per run."""
    step = step_times.groupby("head")["seconds_per_step"].min()
    main = main_runs(history)
    reached = main[main["val_accuracy"] >= target].groupby(RUN_KEYS)["epoch"].min()
    trained = main.groupby(RUN_KEYS)["epoch"].max()
    runs = main[RUN_KEYS].drop_duplicates().set_index(RUN_KEYS)
    epochs = reached.reindex(runs.index).to_numpy()
    per_epoch = steps_per_epoch * step.reindex(runs.index.get_level_values("head")).to_numpy()
    missed = np.isnan(epochs)
    return runs.assign(
        epochs_to_target=epochs, time_to_target=epochs * per_epoch,
        time_to_target_at_least=np.where(missed, (trained.reindex(runs.index).to_numpy() + 1)
                                         * per_epoch, np.nan)).reset_index()


def phase_table(grid: pd.DataFrame, stride: int, heads: Sequence[str]) -> pd.DataFrame:
    """Test accuracy (%, mean over seeds, one decimal) per head and phase ``(dx mod stride,
    dy mod stride)`` of the non-zero offsets: one row per head, one column per phase.

    Phase ``(0, 0)`` holds the whole-cell shifts; a backbone equivariant to every shift would
    give every column the same accuracy."""
    moved = grid[(grid.dx != 0) | (grid.dy != 0)]
    phases = moved.assign(px=moved.dx % stride, py=moved.dy % stride)
    per_seed = phases.groupby(["head", "seed", "py", "px"], as_index=False)["accuracy"].mean()
    mean = per_seed.groupby(["head", "py", "px"])["accuracy"].mean() * 100
    wide = mean.unstack(["py", "px"]).reindex(list(heads)).round(1)
    wide.columns = [f"({px},{py})" for py, px in wide.columns]
    return wide.reset_index()


def study_tables(results: pd.DataFrame, grid: pd.DataFrame,
                 confidence: float = 0.95) -> StudyTables:
    """The frames the report is built from: ``main`` (the main runs' rows), ``aggregate``
    (their ``summarize`` by head), ``by_radius`` (their accuracy per shift radius),
    ``curve`` / ``curve_aggregate`` (learning-curve rows, summarized by head and fraction)
    and ``ablation`` / ``ablation_aggregate`` / ``ablation_by_radius`` (the same for the
    training shifts)."""
    main, curve, ablation = main_runs(results), curve_runs(results), ablation_runs(results)
    by_radius = radius_table(grid)
    return StudyTables(
        main=main,
        aggregate=summarize(main, "head", SUMMARY_METRICS, confidence),
        by_radius=main_runs(by_radius),
        curve=curve,
        curve_aggregate=summarize(curve, ["head", "fraction"], CURVE_METRICS, confidence),
        ablation=ablation,
        ablation_aggregate=summarize(ablation, ["head", "train_shift"], ABLATION_METRICS,
                                     confidence),
        ablation_by_radius=ablation_runs(by_radius),
    )


def _mean_or_none(group: pd.DataFrame, metric: str) -> float | None:
    """The mean of ``metric`` over ``group``; ``None`` (JSON null, not NaN) for a metric the
    head does not have (CAM of dense)."""
    if metric not in group or group[metric].isna().all():
        return None
    return float(group[metric].mean())


def headline_metrics(results: pd.DataFrame,
                     learning_rates: dict[str, float]) -> dict[str, dict[str, object]]:
    """Per head, the mean over seeds of each deterministic metric of the main runs (timings
    excluded, so the file is byte-identical between runs with the same params), its tuned
    learning rate, the
    overfitting gap per training fraction and the shift metrics per training shift, for
    ``dvc metrics``."""
    out: dict[str, dict[str, object]] = {}
    main, curve, ablation = main_runs(results), curve_runs(results), ablation_runs(results)
    mean = _mean_or_none
    for head, group in main.groupby("head", sort=False):
        out[head] = {m: mean(group, m) for m in HEADLINE_METRICS if m in group}
        out[head].update({m: int(group[m].max()) for m in HEADLINE_METRICS
                          if m.startswith("params_")})  # counts: the same for every seed
        out[head]["seeds"] = len(group)
        out[head]["learning_rate"] = learning_rates[head]
        out[head]["by_fraction"] = {
            f"{fraction:g}": {m: mean(runs, m) for m in ("test_accuracy", "test_loss",
                                                          "overfit_gap")}
            for fraction, runs in curve[curve["head"] == head].groupby("fraction")}
        out[head]["by_train_shift"] = {
            f"{shift}": {m: mean(runs, m) for m in ("shift_accuracy_mean", "consistency_exact",
                                                     "flip_rate_all_pairs")}
            for shift, runs in ablation[ablation["head"] == head].groupby("train_shift")}
    return out
