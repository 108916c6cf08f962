"""The mechanism experiment in the report (``gap_study.stages.mechanism``; ``docs/study.md``, "The
mechanism of translation robustness"): its numbers as facts for the report's template.

The reference cell is the first value of ``mechanism.downsample`` and of ``mechanism.padding``.
A head's *phase gap* is its accuracy at whole-cell shifts minus its accuracy at every other
shift; a cell *closes* the share ``1 - gap(cell) / gap(reference)`` of it. By distance
(``gap_study.report.mechanism_distance``), the *same-radius phase gap* compares whole-cell shifts
with the other shifts of the same radii, and a factor's effect is a paired difference by seed
at each radius. The exact cell and the shift-trained runs are ``gap_study.report.
mechanism_training``'s. Inputs: the mechanism stage's ``runs.csv`` (one row per head, cell,
training shift and seed) and ``shift_grid.csv`` (accuracy per offset and run); means over
seeds, every table but the shift-trained one of the centred runs alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pandas as pd

from gap_study.report.mechanism_distance import (
    Effect,
    FlattenHead,
    accuracy_by_radius,
    flatten_head,
    largest_mean_radius,
    levels,
    padding_effects,
    radius_table,
)
from gap_study.report.mechanism_training import (
    Exact,
    ShiftTrained,
    exact_facts,
    shift_trained_facts,
    split_runs,
    training_table,
)
from gap_study.report.stats import summarize, t_interval

__all__ = ["LITTLE", "MECHANISM_METRICS", "NEAR_INVARIANT", "PUBLISHED_MECHANISM",
           "MechanismFacts", "cells_in_order", "factor_table", "mechanism_facts", "phase_gaps",
           "published_rows", "zhang_range"]

Cell = tuple[str, str]
MECHANISM_METRICS = ("test_accuracy", "consistency_exact", "flip_rate_all_pairs",
                     "aligned_shift_accuracy", "other_shift_accuracy")
_LABELS = ("test accuracy", "exact consistency", "all-pairs flip rate",
           "whole-cell shifts", "other shifts")
# the downsampling the literature's expectations are about (Zhang 2019's anti-aliasing)
ANTI_ALIASED = "blurmax"
# a share of the phase gap below this is "little": the threshold the report uses to say
# whether a factor matters, declared here rather than chosen after seeing the numbers
LITTLE = 0.25
# within this of 1, a consistency is "within a point of exact invariance"
NEAR_INVARIANT = 0.01

# Published numbers the experiment can be set beside (``docs/study.md``, "Published numbers"):
# Zhang (2019), ImageNet consistency without and with a Bin-5 blur before each subsampling;
# Azulay & Weiss (2019), the "Black" protocol's probability that a diagonal 1-pixel shift
# changes the top-1 class of ImageNet networks.
PUBLISHED_MECHANISM = {
    "zhang_consistency_gain": {"VGG16": (0.8852, 0.9019), "ResNet-18": (0.8511, 0.8825),
                               "ResNet-50": (0.8920, 0.9131)},
    "azulay_black_flip": (0.18, 0.20),
}


def cells_in_order(settings: Mapping[str, Sequence[str]]) -> list[Cell]:
    """The ``(downsample, padding)`` cells of the ``mechanism`` params, reference first."""
    return [(d, p) for d in settings["downsample"] for p in settings["padding"]]


def phase_gaps(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of each head and cell's metrics, with ``phase_gap`` (whole-cell minus
    other shifts): one row per head and cell."""
    means = runs.groupby(["head", "downsample", "padding"], sort=False)[
        list(MECHANISM_METRICS)].mean()
    return means.assign(phase_gap=means.aligned_shift_accuracy - means.other_shift_accuracy)


def factor_table(runs: pd.DataFrame, heads: Sequence[str], cells: Sequence[Cell],
                 confidence: float) -> pd.DataFrame:
    """Head x cell rows of ``mean [low, high]%`` over seeds for ``MECHANISM_METRICS``."""
    aggregate = summarize(runs, ["head", "downsample", "padding"], MECHANISM_METRICS,
                          confidence).set_index(["head", "downsample", "padding", "metric"])
    rows = []
    for head in heads:
        for downsample, padding in cells:
            row = {"head": head, "downsample": downsample, "padding": padding}
            for metric, label in zip(MECHANISM_METRICS, _LABELS, strict=True):
                s = aggregate.loc[(head, downsample, padding, metric)]
                row[label] = (f"{s['mean'] * 100:.1f} [{s['ci_low'] * 100:.1f}, "
                              f"{s['ci_high'] * 100:.1f}]%")
            rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class Closure:
    """A pooling head's phase gap in the reference cell and the share each other cell closes
    (``closed``: cell, share)."""

    head: str
    aligned: float
    other: float
    gap: float
    closed: list[tuple[Cell, float]]


def _closure(gaps: pd.DataFrame, head: str, cells: list[Cell]) -> Closure:
    base = gaps.loc[(head, *cells[0])]
    closed = [] if base.phase_gap <= 0 else [
        (cell, 1 - gaps.loc[(head, *cell)].phase_gap / base.phase_gap) for cell in cells[1:]]
    return Closure(head, base.aligned_shift_accuracy, base.other_shift_accuracy, base.phase_gap,
                   closed)


def _by_cell(factors: pd.DataFrame, heads: Sequence[str],
             closures: Sequence[Closure]) -> pd.DataFrame:
    """``factor_table``'s exact consistency narrowed to the page, a row per cell (in the
    table's order) and a column per head, then per pooling head with a phase gap the share
    of it each cell closes (blank in the reference cell)."""
    wide = factors.pivot(index=["downsample", "padding"], columns="head",
                         values="exact consistency")
    cells = list(dict.fromkeys(zip(factors.downsample, factors.padding, strict=True)))
    table = wide.reindex(cells)[list(heads)].rename(columns=lambda h: f"`{h}`").reset_index() \
        .rename_axis(columns=None)
    for closure in closures:
        if closure.closed:
            shares = {cell: f"{share:.0%}" for cell, share in closure.closed}
            table[f"`{closure.head}`: closed"] = [shares.get(cell, "") for cell in cells]
    return table


@dataclass(frozen=True)
class FactorVerdict:
    """In the 2 x 2 design of the reference cell, one other downsampling and the second
    padding: the share of a head's phase gap the downsampling closes on its own (``blur``),
    the padding (``pad``), both (``both``); ``interaction`` is ``"add"``, ``"more"`` or
    ``"less"``: what the padding adds on top of the downsampling, against what it does
    alone."""

    head: str
    downsample: str
    padding: str
    blur: float
    pad: float
    both: float
    little: list[str]  # "downsample" and/or "padding": those closing less than ``LITTLE``

    @property
    def extra(self) -> float:
        return self.both - self.blur

    @property
    def interaction(self) -> str:
        if abs(self.extra - self.pad) < LITTLE / 2:
            return "add"
        return "more" if self.extra > self.pad else "less"


def _factor_verdicts(gaps: pd.DataFrame, head: str, cells: list[Cell]) -> list[FactorVerdict]:
    """One verdict per downsampling level after the reference, with two padding levels."""
    downsamples, paddings = levels(cells)
    if len(downsamples) < 2 or len(paddings) != 2:
        return []
    (p0, p1), d0 = paddings, downsamples[0]
    base = gaps.loc[(head, d0, p0)].phase_gap
    if base <= 0:
        return []

    def closed(d: str, p: str) -> float:
        return 1 - gaps.loc[(head, d, p)].phase_gap / base

    verdicts = []
    for d1 in downsamples[1:]:
        blur, pad, both = closed(d1, p0), closed(d0, p1), closed(d1, p1)
        little = [name for name, share in (("downsample", blur), ("padding", pad))
                  if share < LITTLE]
        verdicts.append(FactorVerdict(head, d1, p1, blur, pad, both, little))
    return verdicts


@dataclass(frozen=True)
class PaddingWhere:
    """Where a padding level acts on a head: its effects at the radius of its largest mean
    effect, per downsampling, and the range of its mean effects at the other radii."""

    head: str
    padding: str
    reference: str
    peak: int
    at_grid_edge: bool
    at_peak: list[tuple[str, Effect]]
    others: tuple[float, float] | None


def _padding_where(by_radius: pd.DataFrame, head: str, cells: list[Cell],
                   confidence: float) -> list[PaddingWhere]:
    edge = int(by_radius.radius.max())
    found = []
    for padding, effects in padding_effects(by_radius, head, cells, confidence).items():
        peak = largest_mean_radius(effects)
        if peak is None:
            continue
        others = [e.mean for own in effects.values() for e in own if e.radius != peak]
        found.append(PaddingWhere(
            head, padding, cells[0][1], peak, peak == edge,
            [(d, e) for d, own in effects.items() for e in own if e.radius == peak],
            (min(others), max(others)) if others else None))
    return found


@dataclass(frozen=True)
class Border:
    """Kayhan & van Gemert's border cue against where the second padding acts:
    ``outcome`` is ``"unpaired"``, ``"elsewhere"`` (largest mean effect away from the edge),
    ``"gain"``, ``"loss"`` or ``"unclear"`` (at the edge, interval across zero)."""

    padding: str
    downsample: str
    edge: int
    peak: int | None
    at_edge: Effect | None
    outcome: str


def _border(by_radius: pd.DataFrame, head: str, cells: list[Cell],
            confidence: float) -> Border:
    downsample, padding = cells[0][0], levels(cells)[1][1]
    effects = padding_effects(by_radius, head, cells, confidence)[padding]
    peak, edge = largest_mean_radius(effects), int(by_radius.radius.max())
    if peak is None:
        return Border(padding, downsample, edge, None, None, "unpaired")
    at_edge = next(e for e in effects[downsample] if e.radius == edge)
    outcome = ("elsewhere" if peak != edge else "gain" if at_edge.clear_gain
               else "loss" if at_edge.clear_loss else "unclear")
    return Border(padding, downsample, edge, peak, at_edge, outcome)


@dataclass(frozen=True)
class Expectation:
    """The literature's expectations for a pooling head: the consistency gain of the second
    downsampling beside Zhang's, the best cell's consistency against exact invariance, and
    the border cue."""

    head: str
    downsample: str
    padding: str
    gain: float
    size: str  # "larger than", "smaller than" or "within" Zhang's range
    best: float
    best_low: float
    best_high: float
    border: Border

    @property
    def near_invariant(self) -> bool:
        return bool(self.best >= 1 - NEAR_INVARIANT)

    @property
    def spans_threshold(self) -> bool:
        return bool(self.best_low < 1 - NEAR_INVARIANT <= self.best_high)


def zhang_range() -> tuple[float, float]:
    """The smallest and largest consistency gain Zhang (2019) reports."""
    gains = [b - a for a, b in PUBLISHED_MECHANISM["zhang_consistency_gain"].values()]
    return min(gains), max(gains)


def _expectation(gaps: pd.DataFrame, runs: pd.DataFrame, by_radius: pd.DataFrame, head: str,
                 cells: list[Cell], confidence: float) -> Expectation:
    (d0, p0), d1, p1 = cells[0], ANTI_ALIASED, levels(cells)[1][1]
    low, high = zhang_range()
    own = gaps.loc[head]
    gain = own.loc[(d1, p0)].consistency_exact - own.loc[(d0, p0)].consistency_exact
    seeds = runs[(runs["head"] == head) & (runs.downsample == d1) & (runs.padding == p1)]
    best_low, best_high = t_interval(seeds.consistency_exact.to_numpy(), confidence)
    return Expectation(
        head, d1, p1, gain, "larger than" if gain > high else "smaller than" if gain < low
        else "within", own.loc[(d1, p1)].consistency_exact, best_low, best_high,
        _border(by_radius, head, cells, confidence))


@dataclass(frozen=True)
class MechanismFacts:
    """What the report says about the mechanism experiment."""

    heads: list[str]
    pooled: list[str]
    cells: list[Cell]
    own_cell: Cell
    seeds: int
    images: int
    stride: int
    table: pd.DataFrame  # a row per cell: each head's exact consistency, each phase gap closed
    has_whole_cell_shifts: bool
    closures: list[Closure]
    verdicts: dict[str, list[FactorVerdict]]
    paddings: dict[str, list[PaddingWhere]]
    flatten: list[FlattenHead]
    expectations: list[Expectation]
    exact: list[Exact]  # the heads in the exact cell (aps, circular), when it was run
    shift_trained: list[ShiftTrained]  # the heads trained with shifts, when they were
    train_shift: int | None
    zhang: tuple[float, float] = field(default_factory=zhang_range)
    csv: dict[str, pd.DataFrame] = field(default_factory=dict)
    azulay: tuple[float, float] = PUBLISHED_MECHANISM["azulay_black_flip"]
    little: float = LITTLE
    near_invariant: float = NEAR_INVARIANT

    @property
    def near_invariant_points(self) -> str:
        """``NEAR_INVARIANT`` in points, as the report writes the threshold: ``1``."""
        return f"{self.near_invariant * 100:g}"


def mechanism_facts(runs: pd.DataFrame, grid: pd.DataFrame, stride: int,
                    settings: Mapping[str, Sequence[str]], model: Mapping[str, object],
                    heads: Sequence[str], pooled: Sequence[str],
                    confidence: float) -> MechanismFacts:
    """The facts of the mechanism stage's ``runs`` and ``grid`` for ``heads`` (report order;
    ``pooled``: those that pool globally, the others being flatten baselines), from its
    params ``settings``, the backbone's total ``stride`` and the study's ``model`` section.
    Every fact but the shift-trained ones is of the cells' centred runs."""
    cells, own_cell = cells_in_order(settings), (str(model["downsample"]), str(model["padding"]))
    runs, shifted = split_runs(runs, settings)
    grid, _ = split_runs(grid, settings)
    gaps, by_radius = phase_gaps(runs), accuracy_by_radius(grid)
    factors = factor_table(runs, heads, cells, confidence)
    distance = radius_table(grid, stride, heads, cells, confidence)
    downsamples, paddings = levels(cells)
    expected = ANTI_ALIASED in downsamples and downsamples[0] != ANTI_ALIASED and len(
        paddings) >= 2
    exact = exact_facts(runs, heads, pooled)
    closures = [_closure(gaps, h, cells) for h in pooled]
    return MechanismFacts(
        heads=list(heads), pooled=list(pooled), cells=cells, own_cell=own_cell,
        seeds=int(runs["seed"].nunique()), images=int(runs["test_images"].iloc[0]),
        stride=stride,
        table=_by_cell(factors, heads, closures),
        has_whole_cell_shifts="same-radius phase gap" in distance,
        closures=closures,
        verdicts={h: v for h in pooled if (v := _factor_verdicts(gaps, h, cells))},
        paddings={h: _padding_where(by_radius, h, cells, confidence) for h in pooled},
        flatten=[flatten_head(gaps, by_radius, h, cells, confidence)
                 for h in heads if h not in pooled],
        expectations=[_expectation(gaps, runs, by_radius, h, cells, confidence)
                      for h in pooled] if expected else [],
        exact=exact,
        shift_trained=shift_trained_facts(runs, shifted, own_cell, heads, confidence),
        train_shift=None if shifted.empty else int(shifted.train_shift.iloc[0]),
        csv={"mechanism_factors": factors, "mechanism_by_distance": distance,
             "mechanism_shift_training": training_table(runs, shifted, own_cell, heads,
                                                        confidence)})


def published_rows(facts: MechanismFacts, runs: pd.DataFrame,
                   blur_size: int) -> list[dict[str, str]]:
    """Rows of the published-numbers table: Zhang's consistency gains and Azulay & Weiss's
    "Black" flip rates beside this study's pooling heads (centred runs) in the reference
    cell."""
    gaps = phase_gaps(runs if facts.train_shift is None
                      else runs[runs.train_shift != facts.train_shift])
    rows = [{"source": f"Zhang 2019, ImageNet {net}: consistency without / with a Bin-5 blur",
             "metric": "consistency (two random shifts up to 31 px, cropping)",
             "value": f"{a:.2%} -> {b:.2%} ({(b - a) * 100:+.1f} pts)"}
            for net, (a, b) in PUBLISHED_MECHANISM["zhang_consistency_gain"].items()]
    low, high = PUBLISHED_MECHANISM["azulay_black_flip"]
    rows.append({"source": "Azulay & Weiss 2019, \"Black\": VGG16, ResNet50, DenseNet121",
                 "metric": "P(class changes), diagonal 1-pixel shift on a black canvas",
                 "value": f"{low:.2f}-{high:.2f}"})
    reference, downsamples = facts.cells[0], levels(facts.cells)[0]
    for head in facts.pooled:
        own = gaps.loc[head]
        if ANTI_ALIASED in downsamples[1:]:
            before = own.loc[reference].consistency_exact
            after = own.loc[(ANTI_ALIASED, reference[1])].consistency_exact
            rows.append({"source": f"this study: {head}, {reference[0]} -> {ANTI_ALIASED} "
                                   f"(binomial filter of size {blur_size}, {reference[1]} "
                                   "padding)",
                         "metric": "exact consistency (every pair of grid offsets)",
                         "value": f"{before:.2%} -> {after:.2%} "
                                  f"({(after - before) * 100:+.1f} pts)"})
        rows.append({"source": f"this study: {head}, {reference[0]}, {reference[1]}",
                     "metric": "all-pairs 1-pixel flip rate (incl. diagonals)",
                     "value": f"{own.loc[reference].flip_rate_all_pairs:.2f}"})
    return rows
