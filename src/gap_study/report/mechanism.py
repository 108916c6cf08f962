"""Section "Why global pooling is not shift invariant": the mechanism experiment's factor table
and the sentences its numbers support (``gap_study.stages.mechanism``; ``docs/study.md``,
"The mechanism of translation robustness"), and its rows of the published-numbers comparison.

The reference cell is the first value of ``mechanism.downsample`` and of ``mechanism.padding``.
A head's *phase gap* is its accuracy at whole-cell shifts minus its accuracy at every other
shift; a cell *closes* the share ``1 - gap(cell) / gap(reference)`` of it. These numbers come
from the mechanism stage's ``reports/mechanism/runs.csv`` (one row per head, cell and seed; the
report stage copies it into ``reports/results.csv`` as part ``mechanism``), means over seeds;
those by distance (``gap_study.report.mechanism_distance``) from its ``shift_grid.csv``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from gap_study.report.formatting import format_percent, markdown_table
from gap_study.report.mechanism_distance import (
    GAP_COLUMN,
    accuracy_by_radius,
    border_expectation,
    cell_text,
    flatten_edge_line,
    levels,
    padding_lines,
    radius_table,
)
from gap_study.report.stats import summarize, t_interval

__all__ = [
    "MECHANISM_METRICS",
    "PUBLISHED_MECHANISM",
    "cells_in_order",
    "mechanism_published_rows",
    "mechanism_section",
    "phase_gaps",
]

MECHANISM_METRICS = ("test_accuracy", "consistency_exact", "flip_rate_all_pairs",
                     "aligned_shift_accuracy", "other_shift_accuracy")
_LABELS = ("test accuracy", "exact consistency", "all-pairs flip rate",
           "whole-cell shifts", "other shifts")
# a share of the phase gap below this is "little": the threshold the sentences use to say
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


def cells_in_order(settings: Mapping[str, Sequence[str]]) -> list[tuple[str, str]]:
    """The ``(downsample, padding)`` cells of the ``mechanism`` params, reference first."""
    return [(d, p) for d in settings["downsample"] for p in settings["padding"]]


def phase_gaps(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of each head and cell's metrics, with ``phase_gap`` (whole-cell minus
    other shifts): one row per head and cell."""
    means = runs.groupby(["head", "downsample", "padding"], sort=False)[
        list(MECHANISM_METRICS)].mean()
    return means.assign(phase_gap=means.aligned_shift_accuracy - means.other_shift_accuracy)


def _share(value: float) -> str:
    return f"{value:.0%}"


def _points(value: float) -> str:
    """A difference of two shares, signed, in points."""
    return f"{value * 100:+.1f} pts"


def _mean_interval(row: pd.Series) -> str:
    """``mean [low, high]%``: the factor table has five metric columns, too many for the
    ``mean ± std [CI]`` of the other tables on one screen."""
    return f"{row['mean'] * 100:.1f} [{row['ci_low'] * 100:.1f}, {row['ci_high'] * 100:.1f}]%"


def factor_table(runs: pd.DataFrame, heads: Sequence[str], cells: Sequence[tuple[str, str]],
                 confidence: float) -> pd.DataFrame:
    """Head x cell rows of ``mean [CI]`` over seeds for ``MECHANISM_METRICS`` (percentages)."""
    aggregate = summarize(runs, ["head", "downsample", "padding"], MECHANISM_METRICS,
                          confidence).set_index(["head", "downsample", "padding", "metric"])
    rows = []
    for head in heads:
        for downsample, padding in cells:
            row = {"head": f"`{head}`", "downsample": downsample, "padding": padding}
            for metric, label in zip(MECHANISM_METRICS, _LABELS, strict=True):
                row[label] = _mean_interval(aggregate.loc[(head, downsample, padding, metric)])
            rows.append(row)
    return pd.DataFrame(rows)


def _closure_lines(gaps: pd.DataFrame, head: str, cells: list[tuple[str, str]]) -> list[str]:
    """What each cell does to ``head``'s phase gap, against the reference cell."""
    reference = cells[0]
    base = gaps.loc[(head, *reference)]
    if base.phase_gap <= 0:
        return [f"`{head}` has no phase gap to close in the reference cell "
                f"({cell_text(*reference)}): {format_percent(base.aligned_shift_accuracy)} "
                f"at whole-cell shifts, {format_percent(base.other_shift_accuracy)} at "
                "the others."]
    closed = {cell: 1 - gaps.loc[(head, *cell)].phase_gap / base.phase_gap
              for cell in cells[1:]}
    parts = [f"{cell_text(*cell)} closes {_share(share)} of it (other shifts "
             f"{format_percent(gaps.loc[(head, *cell)].other_shift_accuracy)}, exact "
             f"consistency {format_percent(gaps.loc[(head, *cell)].consistency_exact)})"
             for cell, share in closed.items()]
    text = (f"`{head}`, reference cell ({cell_text(*reference)}): "
            f"{format_percent(base.aligned_shift_accuracy)} accurate at whole-cell "
            f"shifts and {format_percent(base.other_shift_accuracy)} at the others, a "
            f"phase gap of {base.phase_gap * 100:.1f} points; exact consistency "
            f"{format_percent(base.consistency_exact)}.")
    if parts:  # a single cell has nothing to compare with
        text += " " + "; ".join(parts) + "."
    return [text]


def _factor_verdict(gaps: pd.DataFrame, head: str, cells: list[tuple[str, str]]) -> list[str]:
    """Which factor closes more of ``head``'s phase gap on its own, and whether padding adds
    more on top of anti-aliasing than alone (2 x 2 designs only)."""
    downsamples, paddings = levels(cells)
    if len(downsamples) != 2 or len(paddings) != 2:
        return []
    (d0, d1), (p0, p1) = downsamples, paddings
    base = gaps.loc[(head, d0, p0)].phase_gap
    if base <= 0:
        return []

    def closed(d: str, p: str) -> float:
        return 1 - gaps.loc[(head, d, p)].phase_gap / base

    blur, pad, both = closed(d1, p0), closed(d0, p1), closed(d1, p1)
    leader = (f"`{d1}` (the downsampling) closes more of `{head}`'s phase gap than `{p1}` "
              "padding" if blur > pad else
              f"`{p1}` padding closes more of `{head}`'s phase gap than `{d1}` downsampling")
    little = [name for name, share in ((f"`{d1}`", blur), (f"`{p1}` padding", pad))
              if share < LITTLE]
    lines = [f"{leader} ({_share(blur)} vs {_share(pad)} on its own; {_share(both)} together)."]
    if little:
        lines.append(f"On its own, {' and '.join(little)} closes less than {_share(LITTLE)} "
                     "of it: little, by the threshold declared before the runs.")
    extra = both - blur
    if abs(extra - pad) < LITTLE / 2:
        how = "about as much as on its own: the two add up"
    elif extra > pad:
        how = ("more than on its own: the factors interact (padding matters once the "
               "subsampling no longer aliases)")
    else:
        how = "less than on its own: the blur already does part of what padding did"
    lines.append(f"Added to `{d1}`, `{p1}` padding closes a further {_share(extra)}, {how}.")
    return lines


def _dense_lines(gaps: pd.DataFrame, by_radius: pd.DataFrame, stride: int,
                 pooled: Sequence[str], dense: Sequence[str], cells: list[tuple[str, str]],
                 confidence: float) -> list[str]:
    """Where the flatten heads stand: their consistency in the reference cell and at best,
    against the pooling heads', and their accuracy at the largest shifts."""
    lines = []
    for head in dense:
        own = gaps.loc[head].consistency_exact
        best_cell = own.idxmax()
        pooled_best = max(gaps.loc[p].consistency_exact.max() for p in pooled) if pooled else None
        text = (f"`{head}` keeps each position's own weights, so no cell makes it invariant: "
                f"exact consistency {format_percent(own.loc[cells[0]])} in the reference cell and "
                f"at most {format_percent(own.max())} ({cell_text(*best_cell)})")
        if pooled_best is not None:
            text += f", against up to {format_percent(pooled_best)} for the pooling heads"
        lines.append(text + ".")
        reference = gaps.loc[(head, *cells[0])]
        if reference.phase_gap < 0:
            aligned = format_percent(reference.aligned_shift_accuracy)
            other = format_percent(reference.other_shift_accuracy)
            lines.append(
                f"Its phase gap is negative ({aligned} at whole-cell shifts, {other} at the "
                f"others): whole-cell shifts move the object by {stride} pixels or more, and "
                f"`{head}` loses accuracy with distance, whatever the phase (table by "
                "distance).")
        lines.append(flatten_edge_line(by_radius, head, cells, confidence))
    return lines


def _expectation_lines(gaps: pd.DataFrame, runs: pd.DataFrame, by_radius: pd.DataFrame,
                       pooled: Sequence[str], cells: list[tuple[str, str]],
                       confidence: float) -> list[str]:
    """The literature's expectations, checked against the pooling heads' numbers."""
    downsamples, paddings = levels(cells)
    if not pooled or len(downsamples) < 2 or len(paddings) < 2:
        return []
    d0, d1, p0, p1 = downsamples[0], downsamples[1], paddings[0], paddings[1]
    gains = PUBLISHED_MECHANISM["zhang_consistency_gain"]
    low = min(b - a for a, b in gains.values())
    high = max(b - a for a, b in gains.values())
    lines = []
    for head in pooled:
        own = gaps.loc[head]
        gain = own.loc[(d1, p0)].consistency_exact - own.loc[(d0, p0)].consistency_exact
        size = "larger than" if gain > high else "smaller than" if gain < low else "within"
        best = own.loc[(d1, p1)].consistency_exact
        seeds = runs[(runs["head"] == head) & (runs.downsample == d1) & (runs.padding == p1)]
        best_low, best_high = t_interval(seeds.consistency_exact.to_numpy(), confidence)
        text = (f"- `{head}`: `{d1}` changes exact consistency by {_points(gain)}, {size} the "
                f"{low * 100:.1f} to {high * 100:.1f} points Zhang (2019) reports on ImageNet. "
                f"With `{d1}` and `{p1}` padding it reaches {format_percent(best)} "
                f"[{best_low * 100:.1f}, {best_high * 100:.1f}]: ")
        if best >= 1 - NEAR_INVARIANT:
            text += (f"within {NEAR_INVARIANT * 100:.0f} point of exact invariance, where the "
                     "literature expects the ReLUs to keep re-aliasing a blurred network (Zhang "
                     "2019; Azulay & Weiss 2019): that expectation did not hold here.")
        else:
            text += (f"{(1 - best) * 100:.2f} points short of invariance, as the literature "
                     "expects of a blurred network whose ReLUs re-alias.")
        if best_low < 1 - NEAR_INVARIANT <= best_high:
            text = text[:-1] + (f" (the interval spans the declared {NEAR_INVARIANT * 100:.0f}-"
                                "point threshold: the call rests on the mean).")
        base = own.loc[(d0, p0)].phase_gap
        if base > 0:
            padding_alone = 1 - own.loc[(d0, p1)].phase_gap / base
            text += (f" `{p1}` padding alone closes {_share(padding_alone)} of the phase gap "
                     f"({'little' if padding_alone < LITTLE else 'more than a little'}, by "
                     "the declared threshold).")
        text += " " + border_expectation(by_radius, head, cells, confidence)
        lines.append(text)
    return lines


def mechanism_section(runs: pd.DataFrame, grid: pd.DataFrame, stride: int,
                      settings: Mapping[str, Sequence[str]], model: Mapping[str, object],
                      heads: Sequence[str], pooled: Sequence[str], figures: Mapping[str, str],
                      confidence: float) -> list[str]:
    """Section "Why global pooling is not shift invariant" from the mechanism stage's
    ``runs`` and ``grid`` (accuracy per offset and run) and its ``mechanism`` params
    ``settings`` (``stride``: the backbone's total stride; ``model``: the study's model
    section; ``heads``: the experiment's heads in report order; ``pooled``: those that pool
    globally, the others being flatten baselines)."""
    cells = cells_in_order(settings)
    gaps = phase_gaps(runs)
    by_radius = accuracy_by_radius(grid)
    dense = [h for h in heads if h not in pooled]
    seeds = runs["seed"].nunique()
    images = int(runs["test_images"].iloc[0])
    own = (model["downsample"], model["padding"])
    reference = ("the study's own backbone" if cells[0] == own else
                 f"not the study's backbone, which is {cell_text(*own)}")
    lines = [
        "## Why global pooling is not shift invariant", "",
        f"The heads {', '.join(f'`{h}`' for h in heads)} trained as the main runs are (all "
        f"training images, centred, {seeds} seeds) in every cell of downsampling x padding; "
        f"every run is scored on the shift grid of the same {images} test images, so the "
        f"cells compare directly (the reference cell, {cell_text(*cells[0])}, is {reference}). "
        "A backbone of total stride `s` moves its map "
        "by whole cells when the object moves by multiples of `s`; global pooling ignores such "
        "a move, and the *phase gap* (accuracy at whole-cell shifts minus accuracy at the "
        "others) measures what the other shifts cost. Whole-cell shifts lie only at radii "
        "that are multiples of `s`, so the phase gap also sets those distances against the "
        "others; the table by distance below keeps the two apart. Table: mean "
        f"[{confidence:.0%} interval] over seeds of test accuracy on centred images, exact "
        "consistency, the all-pairs flip rate and accuracy at whole-cell and at other shifts; "
        "per-run numbers in `results.csv`, part `mechanism`.", "",
        markdown_table(factor_table(runs, heads, cells, confidence)), "",
        *_distance_lines(grid, stride, heads, cells, confidence)]
    for head in pooled:
        lines += [*_closure_lines(gaps, head, cells), ""]
        if verdict := _factor_verdict(gaps, head, cells):
            lines += [" ".join(verdict), ""]
        if padding := padding_lines(by_radius, head, cells, confidence):
            lines += [" ".join(padding), ""]
    lines += [*_dense_lines(gaps, by_radius, stride, pooled, dense, cells, confidence), ""]
    expectations = _expectation_lines(gaps, runs, by_radius, pooled, cells, confidence)
    if expectations:
        lines += ["What the literature expected, and how the numbers here compare:", "",
                  *expectations, ""]
    if "mechanism_heatmaps" in figures:
        lines += [f"![Accuracy per shift in every cell]({figures['mechanism_heatmaps']})", ""]
    return lines


def _distance_lines(grid: pd.DataFrame, stride: int, heads: Sequence[str],
                    cells: list[tuple[str, str]], confidence: float) -> list[str]:
    """The table by distance and the paragraph that introduces it."""
    table = radius_table(grid, stride, heads, cells, confidence)
    text = "By distance: accuracy (%, mean over seeds) at each shift radius `max(|dx|, |dy|)`."
    if GAP_COLUMN in table:
        text += (" A radius that holds whole-cell shifts is split into those and the others, "
                 "which move the object by whole cells along one axis and by part of a cell "
                 f"along the other; the *{GAP_COLUMN}* (whole-cell minus other shifts of those "
                 f"radii, points, mean [{confidence:.0%} interval]) is what that part of a cell "
                 "costs at one distance.")
    else:
        text += f" The grid holds no whole-cell shift (none is a multiple of {stride} pixels)."
    return [text, "", markdown_table(table), ""]


def mechanism_published_rows(runs: pd.DataFrame, settings: Mapping[str, Sequence[str]],
                             blur_size: int, pooled: Sequence[str]) -> list[dict[str, str]]:
    """Rows of the published-numbers table: Zhang's consistency gains and Azulay & Weiss's
    "Black" flip rates beside this study's."""
    cells = cells_in_order(settings)
    gaps = phase_gaps(runs)
    downsamples, _ = levels(cells)
    rows = [{"source": f"Zhang 2019, ImageNet {net}: consistency without / with a Bin-5 blur",
             "metric": "consistency (two random shifts up to 31 px, cropping)",
             "value": f"{a:.2%} -> {b:.2%} ({_points(b - a)})"}
            for net, (a, b) in PUBLISHED_MECHANISM["zhang_consistency_gain"].items()]
    low, high = PUBLISHED_MECHANISM["azulay_black_flip"]
    rows.append({"source": "Azulay & Weiss 2019, \"Black\": VGG16, ResNet50, DenseNet121",
                 "metric": "P(class changes), diagonal 1-pixel shift on a black canvas",
                 "value": f"{low:.2f}-{high:.2f}"})
    reference = cells[0]
    for head in pooled:
        own = gaps.loc[head]
        if len(downsamples) > 1:
            before = own.loc[reference].consistency_exact
            after = own.loc[(downsamples[1], reference[1])].consistency_exact
            rows.append({"source": f"this study: `{head}`, `{reference[0]}` -> "
                                   f"`{downsamples[1]}` (binomial filter of size {blur_size}, "
                                   f"{reference[1]} padding)",
                         "metric": "exact consistency (every pair of grid offsets)",
                         "value": f"{before:.2%} -> {after:.2%} ({_points(after - before)})"})
        rows.append({"source": f"this study: `{head}`, {cell_text(*reference)}",
                     "metric": "all-pairs 1-pixel flip rate (incl. diagonals)",
                     "value": f"{own.loc[reference].flip_rate_all_pairs:.2f}"})
    return rows
