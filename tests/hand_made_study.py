"""A small hand-made study, as the stages before the report write it, without training or
torch: the report's inputs for ``test_report_stage`` and ``test_report_render`` (the fixture
``layout`` in ``conftest.py``). Its metrics are random draws, but the structure is the
stages': every head, run, record and table the report reads."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gap_study.pipeline.params import ReportParams
from gap_study.pipeline.paths import Layout, RunId
from gap_study.report.claims import claim_comparisons, claim_verdicts
from gap_study.report.facts import ReportFacts, build_facts
from gap_study.report.per_image import PerImageValues
from gap_study.report.tables import collect_results, study_tables, with_derived_metrics

HEADS = ["dense", "gsp", "gap"]  # not alphabetical: outputs follow this order
SETTINGS = ReportParams(confidence=0.95, alpha=0.05, time_target=0.5,
                        bootstrap={"resamples": 1000, "seed": 0},
                        margins={"accuracy": 0.01, "consistency": 0.01, "loss": 0.05,
                                 "time": 0.1})
LEARNING_RATES = {"dense": 0.001, "gsp": 0.0003, "gap": 0.003}
RUNS = [RunId(fraction, shift, seed) for fraction, shift in [(0.5, 0), (1.0, 0), (1.0, 2)]
        for seed in (0, 1)]
MAX_SHIFT = 2
FEATURE_MAP = {"shape": [16, 4, 4], "stride": 2,  # widths [8, 16] on an 8x8 canvas
               "sum_over_average": {"factor": 16.0, "ratio_mean": 16.00004,
                                    "max_relative_deviation": 2.5e-06}}
EPOCH_SECONDS = [0.3, 0.1, 0.2]



def _metrics_row(head: str, run: RunId, rng: np.random.Generator) -> dict[str, object]:
    """A ``metrics.csv`` row; grid and map metrics only on the whole training set, CAM
    metrics only for heads with maps."""
    full, cam = run.fraction == 1.0, head != "dense"
    row = {"head": head, **run.as_dict(), "train_images": round(80 * run.fraction),
           "params_total": 1000 if head == "dense" else 170,
           "params_head": 900 if head == "dense" else 170, "train_accuracy": 1.0}
    row.update({m: rng.uniform(0.6, 0.9) for m in ("test_accuracy", "train_loss")})
    row.update(overfit_gap=1.0 - row["test_accuracy"], test_loss=row["train_loss"] + 0.2,
               loss_gap=0.2)
    for metric in ("shift_accuracy_mean", "shift_accuracy_worst", "consistency", "flip_rate",
                   "consistency_exact", "flip_rate_all_pairs"):
        row[metric] = rng.uniform(0.1, 0.9) if full else np.nan
    for metric in ("pointing_accuracy", "pointing_accuracy_shifted"):
        row[metric] = rng.uniform(0.5, 1.0) if full and cam else np.nan
    for metric in ("pointing_gradcam", "pointing_gradcam_shifted"):  # every head has one
        row[metric] = rng.uniform(0.5, 1.0) if full else np.nan
    for metric, level in [("pointing_chance", 0.25), ("pointing_centre_prior", 1.0),
                          ("pointing_centre_prior_shifted", 0.5), ("pointing_ink_shifted", 0.98),
                          ("pointing_ink_two_objects", 0.45),
                          ("pointing_centre_prior_two_objects", 0.2),
                          ("pointing_chance_two_objects", 0.15)]:
        row[metric] = level if full else np.nan
    row["pointing_two_objects"] = rng.uniform(0.5, 1.0) if full and cam else np.nan
    row["pointing_gradcam_two_objects"] = rng.uniform(0.5, 1.0) if full else np.nan
    # protocol 4: the same scores on the objects a head recognises alone
    row["recognised_two_objects"] = rng.uniform(0.3, 1.0) if full else np.nan
    row["pointing_two_objects_recognised"] = rng.uniform(0.5, 1.0) if full and cam else np.nan
    row["pointing_gradcam_two_objects_recognised"] = rng.uniform(0.5, 1.0) if full else np.nan
    row["pointing_ink_two_objects_recognised"] = 0.45 if full else np.nan
    return row


def _cam_examples(count: int = 2) -> dict[str, np.ndarray]:
    maps = np.zeros((count, 8, 8), dtype=np.float32)
    maps[:, 3, 4] = 1.0
    boxes = np.tile(np.array([2, 2, 6, 6]), (count, 1))
    return {"images": np.ones((count, 1, 8, 8), np.float32), "cams": maps, "boxes": boxes,
            "labels": np.arange(count), "shifted_images": np.ones((count, 1, 8, 8), np.float32),
            "shifted_cams": maps, "shifted_boxes": boxes + 1, "shift": np.array([1, -1])}


ENVIRONMENT = {"device": "cpu", "device_name": "test CPU", "torch_threads": 2, "torch": "2.x",
               "numpy": "2.x", "python": "3.11", "platform": "Linux", "git_commit": "abc123"}
WORKER = {"host": "node1", "cpu": "test CPU", "cpu_capability": "AVX2", "torch_threads": 1,
          "device": "cpu"}


DATASET = {"name": "digits", "train_images": 80, "validation_images": 8, "test_images": 20,
           "two_object_canvases": 40, "image_size": 8, "in_channels": 1, "num_classes": 4}


def _records() -> tuple[dict, dict]:
    """The train and evaluate stages' run records."""
    environment = ENVIRONMENT
    train = {"heads": HEADS, "environment": environment,
             "compute": {"scheduler": "local", "threads_per_run": 1, "workers": None},
             "runs": {f"{head}/{run.stem}": WORKER for head in HEADS for run in RUNS},
             "learning_rates": LEARNING_RATES,
             # the train stage drops the test split and the two-object canvases
             "dataset": {**DATASET, "test_images": 0, "two_object_canvases": 0},
             "model": {"widths": [8, 16], "dense_hidden": 10, "downsample": "max",
                       "blur_size": 3, "padding": "zeros"},
             "train": {"epochs": 3, "batch_size": 16, "schedule": "cosine",
                       "drop_last": True, "weight_decay": 0.0, "validation_batch_size": 64,
                       "fractions": [0.5, 1.0], "shift": [0, 2], "seeds": [0, 1]}}
    evaluate = {"heads": HEADS, "environment": environment,
                "evaluate": {"max_shift": MAX_SHIFT, "batch_size": 8, "seed": 0},
                "feature_map": FEATURE_MAP, "dataset": DATASET}
    return train, evaluate


def _write_head(layout: Layout, head: str, rng: np.random.Generator) -> None:
    """One head's files as the training and evaluation stages write them."""
    layout.eval_reports(head).mkdir(parents=True)
    layout.histories(head).mkdir(parents=True)
    rows = pd.DataFrame([_metrics_row(head, run, rng) for run in RUNS])
    # per-image test accuracy whose means are the rows': each image's effect shared by seeds
    images = np.random.default_rng(len(head)).normal(0, 0.3, 40)
    values = {f"{run.stem}/test_accuracy": accuracy + images - images.mean()
              for run, accuracy in zip(RUNS, rows.test_accuracy, strict=True)}
    # the 80 objects of the 40 two-object canvases: Grad-CAM hits and the objects recognised
    # alone, whose (weighted) means become the rows'
    objects = np.random.default_rng([*map(ord, head), 24])
    for i, run in enumerate(RUNS):
        if run.fraction == 1.0:
            seen = np.r_[True, objects.random(79) < 0.6]
            hits = objects.random(80) < 0.7
            values |= {f"{run.stem}/recognised_two_objects": seen,
                       f"{run.stem}/pointing_gradcam_two_objects": hits}
            rows.loc[i, ["recognised_two_objects", "pointing_gradcam_two_objects",
                         "pointing_gradcam_two_objects_recognised"]] = [
                seen.mean(), hits.mean(), hits[seen].mean()]
    rows.to_csv(layout.eval_metrics(head), index=False)
    np.savez(layout.per_image(head), **values)
    offsets = [(dx, dy) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1)
               for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    pd.DataFrame([{**run.as_dict(), "dx": dx, "dy": dy, "radius": max(abs(dx), abs(dy)),
                   "accuracy": rng.uniform(0.2, 1.0)}
                  for run in RUNS if run.fraction == 1.0 for dx, dy in offsets]).to_csv(
        layout.shift_grid(head), index=False)
    for run in RUNS:
        pd.DataFrame([{**run.as_dict(), "epoch": epoch, "train_loss": 1.0 / epoch,
                       "train_accuracy": 0.3 * epoch, "val_loss": 1.1 / epoch,
                       "val_accuracy": 0.25 * epoch, "epoch_seconds": seconds,
                       "images_per_second": 80 / seconds}
                      for epoch, seconds in enumerate(EPOCH_SECONDS, start=1)]).to_csv(
            layout.history(head, run), index=False)
    if head != "dense":
        np.savez(layout.cam_examples(head), **_cam_examples())


STEP_SECONDS = {"dense": [0.030, 0.031, 0.029], "gsp": [0.010, 0.012, 0.011],
                "gap": [0.011, 0.010, 0.012]}


def _write_speed(layout: Layout) -> None:
    """The speed stage's files: three rounds of step times per head, and its record."""
    layout.speed_reports.mkdir(parents=True)
    pd.DataFrame([{"head": head, "round": r, "seconds_per_step": seconds}
                  for head, times in STEP_SECONDS.items()
                  for r, seconds in enumerate(times)]).to_csv(layout.step_times, index=False)
    layout.speed_run.write_text(json.dumps({"batch_size": 16, "threads_per_run": 1,
                                            "environment": ENVIRONMENT}))


def _write_tuning(layout: Layout) -> None:
    """The tune stage's tables: each head at three rates with two tuning seeds, the chosen
    rate the lowest mean loss; gsp's neighbour within its spread (fragile), gap at a bound."""
    layout.tune_reports.mkdir(parents=True)
    runs = pd.DataFrame([
        {"head": head, "lr": lr, "seed": seed,
         "val_loss": 0.2 + (0.0 if lr == chosen else 0.1 if head != "gsp" else 0.01)
         + 0.01 * (seed - 100), "val_accuracy": 0.9}
        for head, chosen in LEARNING_RATES.items() for lr in (0.0003, 0.001, 0.003)
        for seed in (100, 101)])
    runs.to_csv(layout.tuning_runs, index=False)
    means = runs.groupby(["head", "lr"], as_index=False)[["val_loss", "val_accuracy"]].mean()
    means["chosen"] = [LEARNING_RATES[h] == lr for h, lr in zip(means["head"], means["lr"],
                                                                 strict=True)]
    means.to_csv(layout.tuning, index=False)
    pd.DataFrame([{"head": head, "lr": lr, "val_loss": 0.205, "spread": 0.01,
                   "neighbour_gap": 0.01 if head == "gsp" else 0.1, "fragile": head == "gsp",
                   "at_bound": head == "gap", "at_chance": False, "rates": 3}
                  for head, lr in LEARNING_RATES.items()]).to_csv(layout.tune_choices,
                                                                  index=False)


MECHANISM = {"heads": ["dense", "gap"], "downsample": ["max", "blurmax", "aps"],
             "padding": ["zeros", "circular"], "train_shift": 2, "test_images": 20}


def _mechanism_rows(keys: list[dict], rng: np.random.Generator) -> tuple[list, list]:
    """Rows of runs.csv and shift_grid.csv for ``keys``: random metrics, but an exact
    consistency of 1 for a pooling head with aps and circular padding (as tests pin)."""
    runs = [{**key, "source": "trained here", "test_images": 20,
             **{m: rng.uniform(0.3, 1.0) for m in (
                 "test_accuracy", "consistency_exact", "flip_rate_all_pairs",
                 "shift_accuracy_mean", "aligned_shift_accuracy", "other_shift_accuracy")}}
            for key in keys]
    for run in runs:
        if (run["head"], run["downsample"], run["padding"]) == ("gap", "aps", "circular"):
            run["consistency_exact"] = 1.0
    offsets = [(dx, dy) for dy in range(-MAX_SHIFT, MAX_SHIFT + 1)
               for dx in range(-MAX_SHIFT, MAX_SHIFT + 1)]
    grid = [{"dx": dx, "dy": dy, "radius": max(abs(dx), abs(dy)),
             "accuracy": rng.uniform(0.2, 1.0), **key} for key in keys for dx, dy in offsets]
    return runs, grid


def _write_mechanism(layout: Layout, rng: np.random.Generator) -> None:
    """The mechanism stage's files: each head in each cell and in the shift-trained cell, two
    seeds, and its record (the first two downsamplings' rows drawn first, as before aps)."""
    layout.mechanism_reports.mkdir(parents=True)

    def keys(downsamples: Sequence[str], paddings: Sequence[str], shift: int) -> list[dict]:
        return [{"head": h, "downsample": d, "padding": p, "fraction": 1.0,
                 "train_shift": shift, "seed": seed}
                for h in MECHANISM["heads"] for d in downsamples for p in paddings
                for seed in (0, 1)]
    runs, grid = _mechanism_rows(keys(["max", "blurmax"], MECHANISM["padding"], 0), rng)
    for more in (keys(["aps"], MECHANISM["padding"], 0),
                 keys(["max"], ["zeros"], MECHANISM["train_shift"])):
        more_runs, more_grid = _mechanism_rows(more, rng)
        runs, grid = runs + more_runs, grid + more_grid
    pd.DataFrame(runs).to_csv(layout.mechanism_runs, index=False)
    pd.DataFrame(grid).to_csv(layout.mechanism_grid, index=False)
    labels = [f"{r['head']}-{r['downsample']}-{r['padding']}-shift_{r['train_shift']}-"
              f"seed_{r['seed']}" for r in runs]
    layout.mechanism_run.write_text(json.dumps({"mechanism": MECHANISM,
                                                "environment": ENVIRONMENT,
                                                "runs": dict.fromkeys(labels, WORKER)}))



def write_study(root: Path) -> Layout:
    """The hand-made study's files under ``root``."""
    layout, rng = Layout(root), np.random.default_rng(0)
    for head in HEADS:
        _write_head(layout, head, rng)
    train, evaluate = _records()
    layout.train_run.write_text(json.dumps(train))
    layout.eval_run.write_text(json.dumps(evaluate))
    _write_speed(layout)
    _write_tuning(layout)
    _write_mechanism(layout, rng)
    return layout


def built_study(layout: Layout, heads: Sequence[str] = HEADS):
    """What the report notebook builds for ``heads``: results, tables, comparisons and
    verdicts."""
    collected = collect_results(layout, heads)
    results = with_derived_metrics(collected, time_target=SETTINGS.time_target)
    tables = study_tables(results, collected.grid)
    comparisons = claim_comparisons(results, collected.step_times, heads,
                                    SETTINGS.margins.model_dump(),
                                    per_image=PerImageValues.read(layout, heads),
                                    bootstrap=SETTINGS.bootstrap.model_dump())
    return collected, results, tables, comparisons


FIGURES = ["accuracy", "cam_overlays", "forest", "fraction_curve", "mechanism_heatmaps",
           "params", "pointing", "shift_heatmaps", "shift_radius", "shift_training", "stability",
           "time", "training_curves", "tuning"]


def report_facts(layout: Layout, figures: Sequence[str] = FIGURES,
           heads: Sequence[str] = HEADS) -> ReportFacts:
    """The report's facts of the hand-made study (of ``heads``), figures named as the stage
    names them."""
    collected, _, tables, comparisons = built_study(layout, heads)
    return build_facts(collected=collected, tables=tables, comparisons=comparisons,
                       verdicts=claim_verdicts(comparisons),
                       figures={n: f"figures/{n}.png" for n in figures}, heads=list(heads),
                       settings=SETTINGS, commit="0123abc")
