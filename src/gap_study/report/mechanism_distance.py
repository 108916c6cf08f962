"""Where on the shift grid the mechanism's factors act: accuracy by shift radius, the radii
that hold whole-cell shifts split into those and the others (``docs/study.md``, "The mechanism
experiment", "By distance").

The phase gap of ``gap_study.report.mechanism`` sets whole-cell shifts against every other
shift, but on a grid of half-width ``S`` below ``2 s`` the whole-cell shifts all lie at radius
``s``, so it mixes the sampling phase with the distance moved. Here both are kept apart: the
*same-radius phase gap* compares whole-cell shifts with the other shifts of the same radii, and
a factor's effect is given per radius. Runs of one seed start from the same weights and see the
same batches in every cell (no factor adds a learned or random parameter), so a factor's
effect is a paired difference by seed, with a Student-t interval of the differences.

Input: the mechanism stage's ``shift_grid.csv`` (accuracy per offset and run). Descriptive, as
the rest of the mechanism's facts (``gap_study.report.mechanism``): no tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gap_study.measures.phases import whole_cell_shifts
from gap_study.report.stats import t_interval

__all__ = ["Effect", "FlattenHead", "accuracy_by_radius", "factor_effect", "flatten_head",
           "largest_mean_radius", "levels", "padding_effects", "radius_bands", "radius_table",
           "same_radius_phase_gap"]

Cell = tuple[str, str]
RUN = ["head", "downsample", "padding", "seed"]
CELL = ["head", "downsample", "padding"]
GAP_COLUMN = "same-radius phase gap"


def radius_bands(grid: pd.DataFrame, stride: int) -> pd.DataFrame:
    """Each run's mean accuracy per band of the non-zero offsets: a radius ``max(|dx|, |dy|)``,
    or for a radius that holds whole-cell shifts two bands, ``"r whole-cell"`` and
    ``"r other"``. One row per run (``RUN``), the bands in radius order."""
    whole = whole_cell_shifts(grid, stride)
    moved = grid.loc[whole.index]
    radius = moved.radius.astype(str)
    split = moved.radius.isin(moved.radius[whole])
    band = radius.where(~split, radius + np.where(whole, " whole-cell", " other"))
    per_run = (moved.assign(band=band).groupby([*RUN, "band"], sort=False)["accuracy"].mean()
               .unstack("band"))
    order = sorted(per_run.columns, key=lambda b: (int(b.split()[0]), b.endswith("other")))
    return per_run[order].reset_index().rename_axis(columns=None)


def same_radius_phase_gap(grid: pd.DataFrame, stride: int) -> pd.Series:
    """Per run (``RUN``): mean accuracy at the whole-cell shifts minus mean accuracy at the
    other shifts of the radii that hold whole-cell shifts; empty when the grid has none."""
    whole = whole_cell_shifts(grid, stride)
    moved = grid.loc[whole.index]
    ring = moved.radius.isin(moved.radius[whole])
    by_run = moved[ring].assign(whole=whole[ring]).groupby([*RUN, "whole"])["accuracy"].mean()
    wide = by_run.unstack("whole") if not by_run.empty else pd.DataFrame()
    if True not in wide or False not in wide:  # no whole-cell shift, or (stride 1) only those
        return pd.Series(dtype=float, name="phase_gap")
    return (wide[True] - wide[False]).rename("phase_gap")


def accuracy_by_radius(grid: pd.DataFrame) -> pd.DataFrame:
    """Each run's mean accuracy per radius (the centre is radius 0): ``RUN``, ``radius``,
    ``accuracy``."""
    return grid.groupby([*RUN, "radius"], as_index=False)["accuracy"].mean()



def _mean_interval(values: np.ndarray, confidence: float) -> str:
    low, high = t_interval(values, confidence)
    if np.isnan(low):  # one seed
        return f"{values.mean() * 100:.1f}"
    return f"{values.mean() * 100:.1f} [{low * 100:.1f}, {high * 100:.1f}]"


def radius_table(grid: pd.DataFrame, stride: int, heads: Sequence[str],
                 cells: Sequence[tuple[str, str]], confidence: float) -> pd.DataFrame:
    """Head x cell rows: accuracy per band (``radius_bands``, %, mean over seeds) and the
    same-radius phase gap (points, mean [interval] over seeds) when the grid has whole-cell
    shifts."""
    bands = radius_bands(grid, stride)
    gaps = same_radius_phase_gap(grid, stride)
    rows = []
    for head in heads:
        for cell in cells:
            key = (head, *cell)
            row = {"head": head, "downsample": cell[0], "padding": cell[1]}
            own = bands[(bands["head"] == head) & (bands.downsample == cell[0])
                        & (bands.padding == cell[1])].drop(columns=RUN)
            row.update({band: f"{value * 100:.1f}" for band, value in own.mean().items()})
            if not gaps.empty:
                own_gaps = gaps.xs(key, level=CELL).to_numpy()
                row[GAP_COLUMN] = _mean_interval(own_gaps, confidence)
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Effect:
    """A factor's paired effect at one radius: mean difference of accuracy by seed (``level``
    minus ``reference``) and its interval, as shares."""

    radius: int
    mean: float
    low: float
    high: float

    @property
    def clear_gain(self) -> bool:
        """The interval lies above zero (never with one seed: no interval)."""
        return bool(self.low > 0)

    @property
    def clear_loss(self) -> bool:
        return bool(self.high < 0)



def factor_effect(by_radius: pd.DataFrame, head: str, reference: tuple[str, str],
                  level: tuple[str, str], confidence: float) -> list[Effect]:
    """The effect of moving ``head`` from cell ``reference`` to cell ``level`` (both
    ``(downsample, padding)``) at each non-zero radius, from ``accuracy_by_radius`` rows;
    seeds present in both cells pair up."""
    def cell(downsample: str, padding: str) -> pd.DataFrame:
        own = by_radius[(by_radius["head"] == head) & (by_radius.downsample == downsample)
                        & (by_radius.padding == padding) & (by_radius.radius > 0)]
        return own.pivot(index="seed", columns="radius", values="accuracy")

    difference = (cell(*level) - cell(*reference)).dropna()
    effects = []
    for radius in difference.columns:
        values = difference[radius].to_numpy()
        low, high = t_interval(values, confidence)
        effects.append(Effect(int(radius), float(values.mean()), low, high))
    return effects


def levels(cells: Sequence[tuple[str, str]]) -> tuple[list[str], list[str]]:
    """The downsampling and padding levels of ``cells``, reference first."""
    return list(dict.fromkeys(d for d, _ in cells)), list(dict.fromkeys(p for _, p in cells))



def padding_effects(by_radius: pd.DataFrame, head: str, cells: Sequence[tuple[str, str]],
                    confidence: float) -> dict[str, dict[str, list[Effect]]]:
    """Per non-reference padding level, per downsampling level: the paired effect of that
    padding against the reference padding (the first) on ``head``'s accuracy at each
    radius."""
    downsamples, paddings = levels(cells)
    return {padding: {d: factor_effect(by_radius, head, (d, paddings[0]), (d, padding),
                                       confidence) for d in downsamples}
            for padding in paddings[1:]}


def largest_mean_radius(effects: dict[str, list[Effect]]) -> int | None:
    """The radius where an effect, its mean over the downsampling levels, is largest in size;
    ``None`` when no seed pairs up."""
    means = pd.DataFrame([{"radius": e.radius, "mean": e.mean}
                          for own in effects.values() for e in own])
    if means.empty:
        return None
    return int(means.groupby("radius")["mean"].mean().abs().idxmax())


@dataclass(frozen=True)
class FlattenHead:
    """A flatten head in the experiment: its best consistency and that cell, a negative
    phase gap, and its accuracy at the grid's edge with
    what each other cell changes there (``outcome``: ``"none"`` without pairs, ``"gain"``,
    ``"one seed"`` or ``"consistent"`` with no gain)."""

    head: str
    best: float
    best_cell: Cell
    negative_gap: tuple[float, float] | None  # (whole-cell, other) when the gap is negative
    edge: int
    edge_accuracy: float
    centred_accuracy: float
    edge_effects: list[tuple[Cell, Effect]]
    gain_cell: Cell | None
    gain_accuracy: float | None
    outcome: str


def flatten_head(gaps: pd.DataFrame, by_radius: pd.DataFrame, head: str,
                 cells: Sequence[Cell], confidence: float) -> FlattenHead:
    """A flatten head's facts, from the mechanism's ``phase_gaps`` (``gaps``) and
    ``accuracy_by_radius`` (``by_radius``)."""
    consistency = gaps.loc[head].consistency_exact
    reference = gaps.loc[(head, *cells[0])]
    edge = int(by_radius.radius.max())
    own = by_radius[by_radius["head"] == head].groupby(
        ["downsample", "padding", "radius"])["accuracy"].mean()
    effects = [(cell, e) for cell in cells[1:]
               for e in factor_effect(by_radius, head, cells[0], cell, confidence)
               if e.radius == edge]
    gains = [(cell, e) for cell, e in effects if e.clear_gain]
    gain_cell = max(gains, key=lambda pair: pair[1].mean)[0] if gains else None
    outcome = ("none" if not effects else "gain" if gains
               else "one seed" if all(e.low != e.low for _, e in effects) else "consistent")
    return FlattenHead(
        head, consistency.max(), consistency.idxmax(),
        (reference.aligned_shift_accuracy, reference.other_shift_accuracy)
        if reference.phase_gap < 0 else None,
        edge, own.loc[(*cells[0], edge)], own.loc[(*cells[0], 0)], effects, gain_cell,
        own.loc[(*gain_cell, edge)] if gain_cell else None, outcome)
