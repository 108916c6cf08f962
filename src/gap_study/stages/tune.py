"""Each head's learning rate, chosen on the validation split (``docs/study.md``, "Training").

One head does not get another's learning rate: every head trains its main run (the whole
training set, centred) once with each rate of ``tune.learning_rates``, with a seed the study
does not report (``tune.seed``), and keeps the rate whose run ends with the best validation
accuracy. The test split takes no part: the stage gets the data set without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from gap_study.data.canvas import CanvasDataset
from gap_study.pipeline.params import ModelParams, TrainParams
from gap_study.pipeline.paths import RunId
from gap_study.pipeline.provenance import worker_facts
from gap_study.pipeline.runtime import resolve_device
from gap_study.stages.train import train_run

__all__ = ["TuningRun", "choose_learning_rates", "tune_task", "tuning_table"]


@dataclass(frozen=True)
class TuningRun:
    """One head trained with one learning rate: its last validation accuracy and loss, its
    history, and where it ran."""

    head: str
    lr: float
    val_accuracy: float
    val_loss: float
    history: pd.DataFrame
    worker: dict[str, object]


def tune_task(item: tuple[str, float], *, data: CanvasDataset, architecture: ModelParams,
              settings: TrainParams, seed: int, device: str) -> TuningRun:
    """``item = (head, learning rate)`` as a task of ``gap_study.pipeline.engine``: the head's
    main run with that rate and ``seed``."""
    head, lr = item
    torch_device = resolve_device(device)
    run = RunId(settings.full_fraction, settings.base_shift, seed)
    _, history = train_run(architecture.to_config(head, data), data, run, settings, lr,
                           device=torch_device, progress=False)
    last = history.iloc[-1]
    return TuningRun(head, lr, float(last["val_accuracy"]), float(last["val_loss"]),
                     history.assign(head=head, lr=lr), worker_facts(torch_device))


def choose_learning_rates(runs: Sequence[TuningRun]) -> dict[str, float]:
    """Per head, the rate with the highest final validation accuracy; a tie goes to the lower
    validation loss, then to the smaller rate."""
    best: dict[str, TuningRun] = {}
    for run in runs:
        held = best.get(run.head)
        if held is None or ((-run.val_accuracy, run.val_loss, run.lr)
                            < (-held.val_accuracy, held.val_loss, held.lr)):
            best[run.head] = run
    return {head: run.lr for head, run in best.items()}


def tuning_table(runs: Sequence[TuningRun]) -> pd.DataFrame:
    """One row per head and rate: ``head, lr, val_accuracy, val_loss, chosen``."""
    chosen = choose_learning_rates(runs)
    return pd.DataFrame([{"head": run.head, "lr": run.lr, "val_accuracy": run.val_accuracy,
                          "val_loss": run.val_loss, "chosen": chosen[run.head] == run.lr}
                         for run in runs])
