"""The evaluation stage's decisions: which metrics each run gets, and which run supplies the
class activation map examples (``docs/study.md``, "Metrics").

Every run gets accuracy, loss and the overfitting gap on centred images; the runs trained on
the whole training set also get the shift grid, consistency, the flip rate and pointing
accuracy (the class activation map's for heads that have one, Grad-CAM's for every head), on
single objects and on the two-object canvases. Every metric that is a mean over test images
(over objects on the two-object canvases) also keeps its per-image values, for intervals that
resample the test images (``docs/study.md``, "Statistics and verdicts"). Nothing here writes
files: the stage writes what ``evaluate_run`` returns.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor

from gap_study.data.canvas import CanvasDataset, to_float
from gap_study.data.splits import fraction_subset
from gap_study.measures.finite import require_finite
from gap_study.measures.localization import (
    cam_examples,
    localization_hits,
    localization_summary,
    two_object_hits,
    two_object_summary,
)
from gap_study.measures.metrics import (
    all_pairs_flip_rate,
    all_pairs_flips_per_image,
    consistency_per_image,
    exact_consistency,
    exact_consistency_per_image,
    flip_rate_per_image,
    grid_accuracy,
    image_outcomes,
    overfitting_metrics,
    share,
    shift_accuracy_per_image,
    shift_grid_predictions,
    shift_summary,
)
from gap_study.nets.architecture import ModelConfig, has_class_map, total_stride
from gap_study.nets.checkpoints import model_from_payload
from gap_study.nets.models import ClassifierNet, fold_batch_norm, head_param_count, param_count
from gap_study.nets.pooling import sum_vs_average
from gap_study.pipeline.params import EvaluateParams
from gap_study.pipeline.paths import RunId
from gap_study.pipeline.provenance import worker_facts
from gap_study.pipeline.runtime import resolve_device, to_device

__all__ = [
    "EvaluationData",
    "RunEvaluation",
    "cam_example_run",
    "evaluate_run",
    "evaluate_task",
    "evaluation_tables",
    "example_cams",
    "feature_map_record",
    "grid_predictions",
    "per_image_values",
]

GRID_COLUMNS = ["fraction", "train_shift", "seed", "dx", "dy", "radius", "accuracy"]


@dataclass(frozen=True)
class EvaluationData:
    """The prepared data set as float tensors on the evaluation device, copied once per stage
    (``labels_train``: the training labels as NumPy, to find each fraction's images; the
    ``*_pair`` tensors: the two-object canvases, their classes and boxes)."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    box_test: Tensor
    x_pair: Tensor
    y_pair: Tensor
    box_pair: Tensor
    labels_train: np.ndarray

    @classmethod
    def on(cls, dataset: CanvasDataset, device: torch.device) -> EvaluationData:
        return cls(x_train=to_device(to_float(dataset.x_train), device),
                   y_train=to_device(torch.as_tensor(dataset.y_train), device),
                   x_test=to_device(to_float(dataset.x_test), device),
                   y_test=to_device(torch.as_tensor(dataset.y_test), device),
                   box_test=to_device(torch.as_tensor(dataset.box_test), device),
                   x_pair=to_device(to_float(dataset.x_pair), device),
                   y_pair=to_device(torch.as_tensor(dataset.y_pair), device),
                   box_pair=to_device(torch.as_tensor(dataset.box_pair), device),
                   labels_train=dataset.y_train)


@dataclass(frozen=True)
class RunEvaluation:
    """One run's metrics (a row of ``metrics.csv``), for runs on the whole training set its
    shift grid (``dx, dy, radius, accuracy``), and for the run that supplies them the class
    activation map examples (``example_cams``)."""

    row: dict[str, object]
    grid: pd.DataFrame | None
    examples: dict[str, np.ndarray] | None = None
    worker: dict[str, object] | None = None  # where it ran (provenance.worker_facts)
    predictions: np.ndarray | None = None  # int8 (test images, grid offsets): the classes
    # metric name -> that metric's value per test image (per object on the two-object
    # canvases), whose mean is the metric in ``row`` (``per_image_values``)
    per_image: dict[str, np.ndarray] | None = None


def evaluate_run(model: ClassifierNet, run: RunId, data: EvaluationData,
                 settings: EvaluateParams, *, full_fraction: float) -> RunEvaluation:
    """Every metric of one run; the translation and map metrics (two-object pointing included)
    only when the run trained on ``full_fraction`` of the training set (the main runs and the
    shift ablation). Each metric with per-image values keeps them (``RunEvaluation``)."""
    # 1. the metrics run on an equivalent model with BatchNorm folded into the convolutions:
    # one pass over each feature map fewer
    fast = fold_batch_norm(model)
    # 2. the overfitting gap is measured on the part of the training set the run saw
    seen = torch.as_tensor(fraction_subset(data.labels_train, run.fraction),
                           device=data.x_train.device)
    batch = settings.batch_size
    row = {"head": model.config.head, **run.as_dict(), "train_images": len(seen),
           "params_total": param_count(model), "params_head": head_param_count(model),
           **overfitting_metrics(fast, data.x_train[seen], data.y_train[seen], data.x_test,
                                 data.y_test, batch)}
    # 3. one more pass over the test images: cheaper than a second path to the run's
    # metrics, which stay computed as before
    correct, loss = image_outcomes(fast, data.x_test, data.y_test, batch)
    per_image = {"test_accuracy": correct, "test_loss": loss}
    if run.fraction != full_fraction:
        return RunEvaluation(row, None, per_image=per_image)
    predictions = shift_grid_predictions(fast, data.x_test, settings.max_shift, batch)
    grid = grid_accuracy(predictions, data.y_test.cpu().numpy(), settings.max_shift)
    per_image.update(_translation_per_image(fast, data, settings, predictions))
    with_maps = has_class_map(model.config.head)
    pointing = localization_hits(fast, data.x_test, data.y_test, data.box_test,
                                 settings.max_shift, settings.seed, batch, with_maps=with_maps)
    two_objects = two_object_hits(fast, data.x_pair, data.y_pair, data.box_pair, batch,
                                  with_maps=with_maps)
    row.update({
        **shift_summary(grid),
        "consistency_exact": exact_consistency(predictions),
        "flip_rate_all_pairs": all_pairs_flip_rate(predictions, settings.max_shift),
        # 4. the shifted passes run once: the metric is the share or mean of their per-image
        # values, as consistency() and flip_rate() compute it
        "consistency": share(per_image["consistency"]),
        "flip_rate": float(per_image["flip_rate"].mean()),
        **localization_summary(pointing, data.box_test, data.x_test.shape[-1]),
        **two_object_summary(two_objects, data.box_pair, data.x_pair.shape[-1]),
    })
    return RunEvaluation(row, grid.assign(**run.as_dict()), predictions=predictions,
                         per_image={**per_image, **pointing, **two_objects})


def _translation_per_image(model: ClassifierNet, data: EvaluationData, settings: EvaluateParams,
                           predictions: np.ndarray) -> dict[str, np.ndarray]:
    """The translation metrics' per-image values, by metric name: from the grid's
    ``predictions`` and from the random shifts and 1-pixel moves of the test images."""
    return {
        "shift_accuracy_mean": shift_accuracy_per_image(predictions, data.y_test.cpu().numpy()),
        "consistency_exact": exact_consistency_per_image(predictions),
        "flip_rate_all_pairs": all_pairs_flips_per_image(predictions, settings.max_shift),
        "consistency": consistency_per_image(model, data.x_test, settings.max_shift,
                                             settings.seed, settings.batch_size),
        "flip_rate": flip_rate_per_image(model, data.x_test, settings.batch_size)}


def evaluate_task(item: tuple[RunId, dict[str, Any]], *, data: CanvasDataset,
                  settings: EvaluateParams, device: str, full_fraction: float,
                  example_run: RunId) -> RunEvaluation:
    """One run as a task of ``gap_study.pipeline.engine``: ``item`` is the run and its checkpoint's
    payload; ``evaluate_run`` on the device ``device`` names where the task runs, plus the
    class activation map examples when the run is ``example_run``."""
    run, payload = item
    torch_device = resolve_device(device)
    model = model_from_payload(payload, torch_device)
    tensors = EvaluationData.on(data, torch_device)
    result = evaluate_run(model, run, tensors, settings, full_fraction=full_fraction)
    require_finite({k: result.row[k] for k in ("train_loss", "test_loss")},
                   run=f"{model.config.head}/{run.stem}")
    examples = example_cams(model, tensors, settings) if run == example_run else None
    return replace(result, examples=examples, worker=worker_facts(torch_device))


def evaluation_tables(results: Sequence[RunEvaluation],
                      head: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``head``'s ``metrics.csv`` (one row per run) and ``shift_grid.csv`` (one row per run on
    the whole training set and offset), from the evaluations of every head's runs in order."""
    own = [result for result in results if result.row["head"] == head]
    grids = [result.grid for result in own if result.grid is not None]
    return (pd.DataFrame([result.row for result in own]),
            pd.concat(grids, ignore_index=True)[GRID_COLUMNS])


def grid_predictions(results: Sequence[RunEvaluation], runs: Sequence[RunId],
                     head: str) -> dict[str, np.ndarray]:
    """``head``'s per-image grid predictions by run stem (``int8 (images, offsets)``), for the
    stage's ``grid_predictions.npz``."""
    return {run.stem: result.predictions for run, result in zip(runs, results, strict=True)
            if result.row["head"] == head and result.predictions is not None}


def per_image_values(results: Sequence[RunEvaluation], runs: Sequence[RunId],
                     head: str) -> dict[str, np.ndarray]:
    """``head``'s per-image values for the stage's ``per_image.npz``, keyed ``<run
    stem>/<metric>`` (``fraction_1-shift_0-seed_3/test_accuracy``): one value per test image
    (per object, ``2 * canvas + j``, for the ``*_two_objects`` metrics), whose mean is the
    metric of that name in ``metrics.csv``."""
    return {f"{run.stem}/{metric}": values
            for run, result in zip(runs, results, strict=True)
            if result.row["head"] == head and result.per_image is not None
            for metric, values in result.per_image.items()}


def example_maps(results: Sequence[RunEvaluation], head: str) -> dict[str, np.ndarray] | None:
    """The class activation map examples of ``head``, or ``None`` (a head without maps)."""
    return next((result.examples for result in results
                 if result.row["head"] == head and result.examples is not None), None)


def cam_example_run(runs: Sequence[RunId]) -> RunId:
    """The run whose class activation maps the report shows: the first main run (the whole
    training set, the smallest training shift, the smallest seed)."""
    full_fraction = max(run.fraction for run in runs)
    return min((run for run in runs if run.fraction == full_fraction),
               key=lambda run: (run.train_shift, run.seed))


def example_cams(model: ClassifierNet, data: EvaluationData,
                 settings: EvaluateParams) -> dict[str, np.ndarray] | None:
    """Class activation maps of four test images, centred and moved by half the largest
    shift (right and up), for the report's overlays; ``None`` for a head without them."""
    if not has_class_map(model.config.head):
        return None
    move = settings.max_shift // 2
    return cam_examples(fold_batch_norm(model), data.x_test, data.y_test, data.box_test,
                        count=4, dx=move, dy=-move, batch_size=settings.batch_size)


def feature_map_record(checkpoint: dict[str, Any]) -> dict[str, object]:
    """The backbone's last map for the run record, from a checkpoint's payload: its shape
    ``[C, H, W]``, the total stride, and global sum vs average pooling measured on random maps
    of that shape (the ratio is ``H * W`` up to float rounding; the report's sum-pooling
    section quotes it)."""
    config = ModelConfig(**checkpoint["config"])
    channels, height, width = config.feature_map_shape
    return {"shape": [channels, height, width], "stride": total_stride(config.widths),
            "sum_over_average": sum_vs_average(height, channels)}
