"""What the architecture guarantees and what training adds, in the mechanism experiment
(``docs/study.md``, "The mechanism experiment"): the cell whose backbone is exactly equivariant
to circular shifts (``aps`` with ``circular`` padding), and the ``model`` section's backbone
trained with random shifts (``mechanism.train_shift``).

Exact invariance is a property of the architecture that the tests pin
(``tests/test_downsample.py``): a head that pools globally on such a backbone predicts the same
class at every shift of the grid, in every run. The report states it per run, as a count of the
runs in which it held, not as a mean with an interval. The shift-trained runs are set beside the
same heads trained centred on the same backbone, paired by seed (both runs of a seed start from
the same weights), and beside the exact cell: descriptive, as the rest of the experiment.

Inputs: the mechanism stage's ``runs.csv`` rows (one per head, cell, training shift and seed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gap_study.report.mechanism_distance import Effect
from gap_study.report.stats import t_interval

__all__ = ["EXACT_CELL", "Exact", "ShiftTrained", "exact_facts", "shift_trained_facts",
           "split_runs", "training_table"]

Cell = tuple[str, str]
# the cell whose backbone commutes with every circular shift (docs/study.md)
EXACT_CELL: Cell = ("aps", "circular")
_METRICS = {"test_accuracy": "test accuracy", "shift_accuracy_mean": "accuracy over the grid",
            "consistency_exact": "exact consistency"}


def split_runs(frame: pd.DataFrame, settings: Mapping[str, object]) -> tuple[pd.DataFrame,
                                                                            pd.DataFrame]:
    """``frame``'s rows (``runs.csv`` or ``shift_grid.csv``) as the cells' centred runs and
    the shift-trained runs (``train_shift`` equal to ``settings["train_shift"]``; none when
    it is unset, or absent from a record written before it existed)."""
    shift = settings.get("train_shift")
    shifted = frame["train_shift"] == shift if shift is not None else np.zeros(len(frame), bool)
    return frame[~shifted], frame[shifted]


@dataclass(frozen=True)
class Exact:
    """A head in the exact cell: how many of its runs predicted one class per test image over
    the whole grid (``exact_runs`` of ``runs``), its mean exact consistency, and its mean
    accuracy on centred images and over the grid."""

    head: str
    pooled: bool
    runs: int
    exact_runs: int
    consistency: float
    accuracy: float
    grid_accuracy: float

    @property
    def exact(self) -> bool:
        return self.exact_runs == self.runs


def exact_facts(runs: pd.DataFrame, heads: Sequence[str], pooled: Sequence[str]) -> list[Exact]:
    """Each head's runs in ``EXACT_CELL`` (centred runs); empty without that cell."""
    facts = []
    for head in heads:
        own = runs[(runs["head"] == head) & (runs.downsample == EXACT_CELL[0])
                   & (runs.padding == EXACT_CELL[1])]
        if own.empty:
            continue
        consistency = own.consistency_exact.to_numpy(dtype=float)
        # 1. equality, not a tolerance: a run is exact when every image's prediction is the
        #    same at every offset, and exact_consistency is then 1.0 to the last bit
        facts.append(Exact(head, head in pooled, len(own), int((consistency == 1.0).sum()),
                           float(consistency.mean()),
                           float(own.test_accuracy.mean()),
                           float(own.shift_accuracy_mean.mean())))
    return facts


@dataclass(frozen=True)
class ShiftTrained:
    """A head on the ``model`` section's backbone trained with random shifts up to ``shift``
    against the same head trained centred: means of each metric of ``_METRICS`` (``centred``,
    ``trained``) and the paired effects of training with shifts on consistency and on accuracy
    over the grid."""

    head: str
    shift: int
    centred: dict[str, float]
    trained: dict[str, float]
    consistency_effect: Effect
    grid_effect: Effect


def _paired(centred: pd.DataFrame, trained: pd.DataFrame, metric: str,
            confidence: float) -> Effect:
    difference = (trained.set_index("seed")[metric] - centred.set_index("seed")[metric]
                  ).dropna().to_numpy(dtype=float)
    low, high = t_interval(difference, confidence)
    return Effect(0, float(difference.mean()), low, high)


def shift_trained_facts(centred: pd.DataFrame, shifted: pd.DataFrame, own_cell: Cell,
                        heads: Sequence[str], confidence: float) -> list[ShiftTrained]:
    """Each head's shift-trained runs against its centred runs in ``own_cell`` (the ``model``
    section's backbone, on which both trained); empty without shift-trained runs."""
    facts = []
    for head in heads:
        trained = shifted[shifted["head"] == head]
        base = centred[(centred["head"] == head) & (centred.downsample == own_cell[0])
                       & (centred.padding == own_cell[1])]
        if trained.empty or base.empty:
            continue
        facts.append(ShiftTrained(
            head, int(trained.train_shift.iloc[0]),
            {m: float(base[m].mean()) for m in _METRICS},
            {m: float(trained[m].mean()) for m in _METRICS},
            _paired(base, trained, "consistency_exact", confidence),
            _paired(base, trained, "shift_accuracy_mean", confidence)))
    return facts


def _mean_interval(values: pd.Series, confidence: float) -> str:
    low, high = t_interval(values.to_numpy(dtype=float), confidence)
    if np.isnan(low):
        return f"{values.mean() * 100:.1f}%"
    return f"{values.mean() * 100:.1f} [{low * 100:.1f}, {high * 100:.1f}]%"


def training_table(centred: pd.DataFrame, shifted: pd.DataFrame, own_cell: Cell,
                   heads: Sequence[str], confidence: float) -> pd.DataFrame | None:
    """Head x (the ``model`` section's backbone trained centred, the same trained with shifts,
    the exact cell trained centred): ``_METRICS``, mean [interval] over seeds; ``None``
    without shift-trained runs."""
    if shifted.empty:
        return None
    shift = int(shifted.train_shift.iloc[0])
    plan = [(own_cell, "centred", centred), (own_cell, f"shifts up to {shift}", shifted)]
    if own_cell != EXACT_CELL:
        plan.append((EXACT_CELL, "centred", centred))
    rows = []
    for head in heads:
        for (downsample, padding), training, runs in plan:
            own = runs[(runs["head"] == head) & (runs.downsample == downsample)
                       & (runs.padding == padding)]
            if not own.empty:
                rows.append({"head": head, "downsample": downsample, "padding": padding,
                             "trained on": training,
                             **{label: _mean_interval(own[metric], confidence)
                                for metric, label in _METRICS.items()}})
    return pd.DataFrame(rows)
