"""Each head's learning rate, chosen on the validation split (``docs/study.md``, "Training",
protocol version 4).

Every head trains its main run (the whole training set, centred) with each rate of its grid and
each seed of ``tune.seeds`` (none of them a reported seed), and keeps the rate whose runs end
with the lowest mean validation loss. The criterion is continuous: a last-bit change in one run
moves it by a little, where validation accuracy (135 images by default) moves by a whole image
or not at all, and ties at 100%. The grid starts as ``tune.learning_rates`` and grows by
half-decades past every end at which a head's best rate sits, within ``[tune.lr_min,
tune.lr_max]`` (``search``). The test split takes no part: the stage gets the data set
without it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gap_study.data.canvas import CanvasDataset
from gap_study.pipeline.params import ModelParams, TrainParams, TuneParams
from gap_study.pipeline.paths import RunId
from gap_study.pipeline.provenance import worker_facts
from gap_study.pipeline.runtime import resolve_device
from gap_study.stages.train import train_run
from gap_study.stages.untrained import (
    CHANCE_MARGIN,
    at_chance,
    chance_loss,
    listed,
    untrained_fix,
    untrained_threshold,
)

__all__ = ["RUN_COLUMNS", "SIGNIFICANT_DIGITS", "TRAIN_KEYS", "Task", "TuningRun", "best_rates",
           "choice_table", "half_decade", "next_rates", "rate_summary", "runs_table", "search",
           "tune_task", "tuning_table", "warn_at_chance"]

# 1. Rates added by the extension are rounded to this many significant digits, so that they
#    print as they are (0.0316, not 0.031622776601683794) and a rerun writes the same bytes.
SIGNIFICANT_DIGITS = 3
RUN_COLUMNS = ["head", "lr", "seed", "val_loss", "val_accuracy"]
# the train section's keys a tuning run reads (dvc.yaml's tune stage declares exactly these):
# its run record holds them, not the seeds or other keys a change of which reruns nothing here
TRAIN_KEYS = ("epochs", "batch_size", "schedule", "drop_last", "weight_decay",
              "validation_batch_size", "fractions", "shift")

Task = tuple[str, float, int]  # (head, learning rate, tuning seed)


@dataclass(frozen=True)
class TuningRun:
    """One head trained with one learning rate and one tuning seed: its last validation loss
    and accuracy, its history, and where it ran."""

    head: str
    lr: float
    seed: int
    val_loss: float
    val_accuracy: float
    history: pd.DataFrame
    worker: dict[str, object]


def tune_task(item: Task, *, data: CanvasDataset, architecture: ModelParams,
              settings: TrainParams, device: str) -> TuningRun:
    """``item = (head, learning rate, seed)`` as a task of ``gap_study.pipeline.engine``: the
    head's main run with that rate and seed."""
    head, lr, seed = item
    torch_device = resolve_device(device)
    run = RunId(settings.full_fraction, settings.base_shift, seed)
    _, history = train_run(architecture.to_config(head, data), data, run, settings, lr,
                           device=torch_device, progress=False)
    last = history.iloc[-1]
    return TuningRun(head, lr, seed, float(last["val_loss"]), float(last["val_accuracy"]),
                     history.assign(head=head, lr=lr), worker_facts(torch_device))


def runs_table(runs: Sequence[TuningRun]) -> pd.DataFrame:
    """One row per run (``RUN_COLUMNS``): heads in their first order, then by rate and seed."""
    order = list(dict.fromkeys(run.head for run in runs))
    ordered = sorted(runs, key=lambda run: (order.index(run.head), run.lr, run.seed))
    return pd.DataFrame([[getattr(run, column) for column in RUN_COLUMNS] for run in ordered],
                        columns=RUN_COLUMNS)


def rate_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per head and rate of ``runs`` (a ``runs_table``): ``val_loss`` and
    ``val_accuracy``, the means over the seeds; ``val_loss_min`` and ``val_loss_max``, their
    range; ``seeds``, how many. Heads in their first order, rates ascending."""
    # 2. Rows sorted by seed before the means: the same runs, in any order, give the same
    #    float sums.
    # 3. A run that diverged (a NaN or infinite loss) counts as an infinite loss: its rate's
    #    mean is infinite and never chosen. A NaN left as it is would be skipped by the mean,
    #    and the other seed's loss alone would stand for the rate.
    order = {head: i for i, head in enumerate(dict.fromkeys(runs["head"]))}
    losses = runs["val_loss"].where(np.isfinite(runs["val_loss"]), np.inf)
    ordered = runs.assign(order=runs["head"].map(order), val_loss=losses).sort_values(
        ["order", "lr", "seed"], kind="stable")
    return ordered.groupby(["head", "lr"], sort=False).agg(
        val_loss=("val_loss", "mean"), val_accuracy=("val_accuracy", "mean"),
        val_loss_min=("val_loss", "min"), val_loss_max=("val_loss", "max"),
        seeds=("seed", "size")).reset_index()


def best_rates(runs: pd.DataFrame) -> dict[str, float]:
    """Per head, the rate with the lowest mean final validation loss over the tuning seeds;
    an exact tie goes to the smaller rate. Validation accuracy plays no part."""
    summary = rate_summary(runs)
    best = summary.sort_values(["val_loss", "lr"], kind="stable").drop_duplicates("head")
    diverged = best.loc[~np.isfinite(best["val_loss"]), "head"].tolist()
    if diverged:
        raise ValueError(
            f"tune: every learning rate tried for {', '.join(diverged)} diverged on some "
            "tuning seed (a NaN or infinite validation loss), so no rate can be chosen. Fix: "
            "lower tune.learning_rates and tune.lr_min in params.yaml")
    chosen = dict(zip(best["head"], best["lr"], strict=True))
    return {head: float(chosen[head]) for head in summary["head"].unique()}


def half_decade(rate: float, anchor: float, direction: int) -> float:
    """The rate half a decade above (``direction = 1``) or below (``-1``) ``rate`` on the
    lattice ``anchor * 10 ** (k / 2)``, rounded to ``SIGNIFICANT_DIGITS``.

    4. Each step is taken from the anchor, not from the rounded rate before it: stepping from
       0.0316 would give 0.0999, from 0.01 it gives 0.1.
    """
    k = round(2 * math.log10(rate / anchor)) + direction
    return float(f"{anchor * 10 ** (k / 2):.{SIGNIFICANT_DIGITS}g}")


def _beyond(rate: float, tried: Sequence[float], grid: Sequence[float]) -> list[float]:
    """The half-decade step past each end of ``tried`` at which ``rate`` sits (none for an
    interior rate). Steps down go from the grid's smallest rate, up from its largest."""
    steps = []
    if rate == min(tried):
        steps.append(half_decade(rate, min(grid), -1))
    if rate == max(tried):
        steps.append(half_decade(rate, max(grid), 1))
    return steps


def _within(rate: float, tuning: TuneParams) -> bool:
    return tuning.lr_min <= rate <= tuning.lr_max


def next_rates(runs: pd.DataFrame, tuning: TuneParams) -> dict[str, list[float]]:
    """The rates to try next, per head: for each end of a head's tried rates at which its best
    rate sits, the half-decade step beyond it, if within ``[tuning.lr_min, tuning.lr_max]``.
    Heads with nothing to add are left out: an empty dict ends the search."""
    added = {}
    for head, best in best_rates(runs).items():
        tried = runs.loc[runs["head"] == head, "lr"].tolist()
        steps = [r for r in _beyond(best, tried, tuning.learning_rates) if _within(r, tuning)]
        if steps:
            added[head] = steps
    return added


def search(heads: Sequence[str], tuning: TuneParams,
           train: Callable[[list[Task]], Sequence[TuningRun]]) -> list[TuningRun]:
    """Every tuning run: ``heads`` x ``tuning.learning_rates`` x ``tuning.seeds`` first, then
    round after round each head's ``next_rates`` x seeds, until no head needs another rate.
    ``train`` runs one round's tasks (the notebook maps them on the engine)."""
    runs = list(train([(head, lr, seed) for head in heads for lr in tuning.learning_rates
                       for seed in tuning.seeds]))
    while added := next_rates(runs_table(runs), tuning):
        runs += train([(head, lr, seed) for head, rates in added.items() for lr in rates
                       for seed in tuning.seeds])
    return runs


def _choice(rates: pd.DataFrame, best: float, tuning: TuneParams,
            num_classes: int) -> dict[str, object]:
    """The choice record of one head, from its rows of ``rate_summary`` (rates ascending)."""
    lrs = rates["lr"].tolist()
    i = lrs.index(best)
    chosen = rates.iloc[i]
    spread = float(chosen["val_loss_max"] - chosen["val_loss_min"])
    neighbours = rates.iloc[[j for j in (i - 1, i + 1) if 0 <= j < len(rates)]]
    gap = float((neighbours["val_loss"] - chosen["val_loss"]).min()) if len(neighbours) \
        else math.nan
    beyond = _beyond(best, lrs, tuning.learning_rates)
    return {"head": chosen["head"], "lr": best, "val_loss": float(chosen["val_loss"]),
            "spread": spread, "neighbour_gap": gap, "fragile": bool(gap <= spread),
            "at_bound": bool(beyond) and not any(_within(r, tuning) for r in beyond),
            "at_chance": at_chance(chosen["val_loss"], num_classes), "rates": len(lrs)}


def choice_table(runs: pd.DataFrame, tuning: TuneParams, num_classes: int) -> pd.DataFrame:
    """One row per head: the chosen rate ``lr``, its mean final validation loss ``val_loss``,
    ``spread``, ``neighbour_gap``, ``fragile``, ``at_bound``, ``at_chance``, how many
    ``rates`` were tried, then the mean loss at every rate tried for any head
    (``val_loss_lr_<rate>``, empty where the head did not try it).

    5. ``spread`` is the range (largest minus smallest) of the chosen rate's final validation
       loss over the tuning seeds; ``neighbour_gap`` is how much higher the lower of the
       neighbouring tried rates' mean losses is than the chosen rate's. The choice is
       ``fragile`` when ``neighbour_gap <= spread``: a neighbour is within the seeds' own
       disagreement, and other seeds could have chosen it.
    6. ``at_bound``: the rate is an end of the head's tried rates and the half-decade step
       beyond that end leaves ``[lr_min, lr_max]``. It is false for an interior rate, and for
       an end the grid could still be extended past, which ``search`` never leaves chosen.
    7. ``at_chance``: the chosen rate's mean loss is at most 1% below ``ln(num_classes)``,
       the cross-entropy of giving each class the same probability, or above it
       (``gap_study.stages.untrained``): no rate tried trained the head (rates far too large
       give finite but useless weights, far too small ones or too short a training leave the
       model about where it started). A floor, not a quality bar. The stage warns
       (``warn_at_chance``) and the report names such heads wherever their verdicts appear.
    """
    summary = rate_summary(runs)
    chosen = best_rates(runs)
    records = pd.DataFrame([_choice(summary[summary["head"] == head], lr, tuning, num_classes)
                            for head, lr in chosen.items()])
    losses = summary.pivot(index="head", columns="lr", values="val_loss").reindex(list(chosen))
    losses.columns = [f"val_loss_lr_{lr:g}" for lr in losses.columns]
    return records.merge(losses, left_on="head", right_index=True, how="left")


def warn_at_chance(choices: pd.DataFrame, num_classes: int) -> None:
    """A ``RuntimeWarning`` naming every head of ``choices`` (a ``choice_table``) whose
    chosen rate is ``at_chance``, with its rate and loss and what to change."""
    failed = choices[choices["at_chance"]]
    if len(failed):
        losses = "; ".join(f"{row.head} at {row.lr:g}: {row.val_loss:.4g}"
                           for row in failed.itertuples())
        warnings.warn(
            f"tune: no learning rate tried trains {listed(failed['head'].tolist())}: the best "
            f"one ends at chance or worse, with a mean validation loss of at least "
            f"{untrained_threshold(num_classes):.4g}, {CHANCE_MARGIN:.0%} below ln "
            f"{num_classes} = {chance_loss(num_classes):.4g}, the loss of giving every class the "
            f"same probability ({losses}). The study goes on, and the report marks these heads "
            f"as untrained. To train them, {untrained_fix()}", RuntimeWarning, stacklevel=2)


def tuning_table(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per head and rate: ``rate_summary`` (``head, lr, val_loss, val_accuracy`` as
    means over the seeds, the loss's range, the seed count) and ``chosen``."""
    summary = rate_summary(runs)
    chosen = best_rates(runs)
    return summary.assign(chosen=[chosen[head] == lr
                                  for head, lr in zip(summary["head"], summary["lr"],
                                                      strict=True)])
