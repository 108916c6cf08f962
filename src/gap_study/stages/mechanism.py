"""The mechanism experiment (``docs/study.md``, "The mechanism of translation robustness"): the
heads of ``mechanism.heads`` trained as the main runs are (the whole training set, centred, every
seed of ``train.seeds``) under every cell of ``mechanism.downsample`` x ``mechanism.padding``,
and, with ``mechanism.train_shift``, once more on the ``model`` section's backbone trained with
random shifts up to it; every run scored on the same shift grid of the same test images.

The cell of the ``model`` section is the main study itself: its runs are the train stage's
checkpoints, evaluated here again, not trained twice; so are the shift-trained runs when the
train stage's augmentation ablation (``train.shift``) has them. Nothing here writes files: the
stage writes what ``mechanism_task`` returns.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from gap_study.data.canvas import CanvasDataset, to_float
from gap_study.data.splits import stratified_subsample
from gap_study.measures.finite import require_finite
from gap_study.measures.metrics import (
    all_pairs_flip_rate,
    exact_consistency,
    grid_accuracy,
    predict_logits,
    shift_grid_predictions,
)
from gap_study.measures.phases import phase_split
from gap_study.nets.architecture import total_stride
from gap_study.nets.checkpoints import checkpoint_payload, checkpoint_size, model_from_payload
from gap_study.nets.models import ClassifierNet, fold_batch_norm
from gap_study.pipeline.params import MechanismParams, ModelParams, ParamsError, TrainParams
from gap_study.pipeline.paths import RunId
from gap_study.pipeline.provenance import worker_facts
from gap_study.pipeline.runtime import resolve_device, to_device
from gap_study.stages.train import train_run

__all__ = [
    "EVALUATE_KEYS",
    "Cell",
    "MechanismResult",
    "MechanismRun",
    "grid_images",
    "mechanism_runs",
    "mechanism_task",
    "run_size",
    "score_grid",
]

# the evaluate section's keys the mechanism reads (dvc.yaml's mechanism stage declares exactly
# these): its run record holds them, not the evaluate stage's own seed
EVALUATE_KEYS = ("max_shift", "batch_size")


@dataclass(frozen=True)
class Cell:
    """One combination of the factors: how the backbone halves its map, how every layer pads."""

    downsample: str
    padding: str

    @property
    def name(self) -> str:
        return f"{self.downsample}-{self.padding}"

    def model(self, base: ModelParams) -> ModelParams:
        """``base`` (the ``model`` section) with this cell's factors."""
        return base.model_copy(update={"downsample": self.downsample, "padding": self.padding})


@dataclass(frozen=True)
class MechanismRun:
    """One run of the experiment: a head in a cell, trained as the main run ``run`` (with its
    training shift). ``main``: the train stage trained this run (the ``model`` section's
    cell, at a training shift of ``train.shift``), so it is that stage's checkpoint."""

    head: str
    cell: Cell
    run: RunId
    main: bool

    @property
    def label(self) -> str:
        shift = f"-shift_{self.run.train_shift}" if self.run.train_shift else ""
        return f"{self.head}-{self.cell.name}{shift}-seed_{self.run.seed}"


# 1. The relative cost of a run in each downsampling (padding other than zeros adds 1): a
#    blurred or APS, circularly padded step costs up to 1.8 times a plain one
#    (``benchmarks/README.md``, "Downsampling and padding").
_COST = {"max": 0, "blurmax": 2, "aps": 2}


def mechanism_runs(settings: MechanismParams, model: ModelParams,
                   train: TrainParams) -> list[MechanismRun]:
    """Every run of the experiment, the most expensive first: every cell's centred runs, and
    the ``model`` section's cell trained with shifts up to ``settings.train_shift`` if set.

    1. Handing the workers the long runs first (``_COST``) and the short ones (the train
       stage's, only scored here) last lets them finish together.
    """
    own = Cell(model.downsample, model.padding)
    planned = [(Cell(d, p), train.base_shift) for d in settings.downsample
               for p in settings.padding]
    if settings.train_shift is not None:
        planned.append((own, settings.train_shift))

    def main(cell: Cell, shift: int) -> bool:
        return cell == own and shift in train.shift

    planned.sort(key=lambda plan: (main(*plan), -_COST[plan[0].downsample]
                                   - (plan[0].padding != "zeros")))
    return [MechanismRun(head, cell, RunId(train.full_fraction, shift, seed),
                         main=main(cell, shift))
            for cell, shift in planned for head in settings.heads for seed in train.seeds]


def grid_images(labels: np.ndarray, count: int | None, seed: int) -> np.ndarray:
    """Indices of the test images every run is scored on: a class-stratified subsample of
    ``count`` (``None``: all), fixed by ``seed``, in the test set's order. A ``count`` above
    the test set is refused (``ParamsError``), never quietly cut to it."""
    if count is not None and count > len(labels):
        raise ParamsError(
            f"mechanism.test_images = {count} is more than the {len(labels)} test images of the "
            f"prepared data set: set it to at most {len(labels)}, or null for all of them")
    index, _ = stratified_subsample(np.arange(len(labels)), labels, count, seed)
    return index


def score_grid(predictions: np.ndarray, labels: np.ndarray, max_shift: int,
               stride: int) -> tuple[dict[str, float], pd.DataFrame]:
    """One run's metrics from its predictions on the shift grid (``int8 (images, offsets)``):
    accuracy on centred images, exact consistency, the all-pairs flip rate, mean accuracy over
    the grid, and accuracy at whole-cell and at other non-zero shifts; and the grid's accuracy
    per offset."""
    grid = grid_accuracy(predictions, labels, max_shift)
    centred = grid[(grid.dx == 0) & (grid.dy == 0)]["accuracy"].item()
    row = {"test_accuracy": centred, "consistency_exact": exact_consistency(predictions),
           "flip_rate_all_pairs": all_pairs_flip_rate(predictions, max_shift),
           "shift_accuracy_mean": float(grid.accuracy.mean()), **phase_split(grid, stride)}
    return row, grid


def run_size(run: MechanismRun, architecture: ModelParams, data: CanvasDataset, images: int,
             max_shift: int) -> int:
    """The bytes a run's results take on disk: its grid predictions (a byte per image and
    offset) and, for a run trained here, its checkpoint (a main run's is the train stage's)."""
    grid = images * (2 * max_shift + 1) ** 2
    if run.main:
        return grid
    return grid + checkpoint_size(run.cell.model(architecture).to_config(run.head, data))


@dataclass(frozen=True)
class MechanismResult:
    """What a task returns: the run's metrics (a row of ``runs.csv``, keyed by head, cell, and
    the fraction, training shift and seed of the main run it repeats), its grid accuracy per
    offset, its grid predictions, and for a trained run its checkpoint and history."""

    row: dict[str, object]
    grid: pd.DataFrame
    predictions: np.ndarray
    checkpoint: dict[str, Any] | None
    history: pd.DataFrame | None
    worker: dict[str, object]


def mechanism_task(item: tuple[MechanismRun, dict[str, Any] | None], *, data: CanvasDataset,
                   architecture: ModelParams, settings: TrainParams,
                   learning_rates: Mapping[str, float], test_index: Sequence[int],
                   max_shift: int, batch_size: int, device: str) -> MechanismResult:
    """One run as a task of ``gap_study.pipeline.engine``: ``item`` is the run and, for a run of the
    ``model`` section's cell, the train stage's checkpoint; any other run is trained here (on
    ``data`` without its test split, with the head's tuned learning rate). Then the run is
    scored on the shift grid of the test images ``test_index``."""
    run, payload = item
    torch_device = resolve_device(device)
    history = None
    if payload is None:
        model: ClassifierNet
        model, history = train_run(run.cell.model(architecture).to_config(run.head, data),
                                   data.without_test(), run.run, settings,
                                   learning_rates[run.head], device=torch_device,
                                   progress=False)
        payload = checkpoint_payload(model)
    else:
        model = model_from_payload(payload, torch_device)
    index = np.asarray(test_index)
    images = to_device(to_float(data.x_test[index]), torch_device)
    folded = fold_batch_norm(model)
    # 1. the centred logits must be finite: the grid keeps only their argmax, which NaN hides
    require_finite({"logits": predict_logits(folded, images, batch_size)}, run=run.label)
    predictions = shift_grid_predictions(folded, images, max_shift, batch_size)
    row, grid = score_grid(predictions, data.y_test[index], max_shift,
                           total_stride(architecture.widths))
    keys = {"head": run.head, "downsample": run.cell.downsample, "padding": run.cell.padding,
            **run.run.as_dict()}
    return MechanismResult(
        row={**keys, "source": "main run" if run.main else "trained here",
             "test_images": len(index), **row},
        grid=grid.assign(**keys), predictions=predictions,
        checkpoint=None if run.main else payload,
        history=None if history is None else history.assign(**keys), worker=worker_facts(
            torch_device))

