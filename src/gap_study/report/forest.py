"""Figures of the verdicts and of the choices made before them: the forest plot of every
primary comparison, and each head's validation accuracy per learning rate (the tune stage)."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from gap_study.report.formatting import RELATIVE

__all__ = ["VERDICT_COLOURS", "forest_rows", "margin_edges", "plot_forest", "plot_tuning"]

VERDICT_COLOURS = {"better": "#1b9e77", "worse": "#d95f02", "equivalent": "#7570b3",
                   "inconclusive": "#999999"}
_PERCENT = frozenset({"test_accuracy", "consistency_exact", "pointing_accuracy_shifted",
                      "pointing_gradcam_two_objects", "pointing_gradcam_two_objects_recognised",
                      "overfit_gap", "shift_accuracy_mean"})


def _scale(metric: str) -> tuple[float, str]:
    """How a metric's improvement is drawn: its factor and axis label."""
    if metric in RELATIVE:
        return 100.0, "improvement (% of the baseline's time)"
    if metric in _PERCENT:
        return 100.0, "improvement (points)"
    if metric.endswith("_loss"):
        return 1.0, "improvement (nats of cross-entropy)"
    return 1.0, "improvement"


def _forest_panel(ax: plt.Axes, rows: pd.DataFrame, metric: str,
                  labels: Mapping[str, str]) -> None:
    factor, xlabel = _scale(metric)
    y = range(len(rows))[::-1]
    for yi, row in zip(y, rows.itertuples(), strict=True):
        colour = VERDICT_COLOURS[row.verdict]
        # the adjusted intervals the verdict read, as in Lakens' plots: the equivalence
        # interval thick (inside the margin = equivalent), the difference interval thin
        # (excluding zero = a difference)
        for low, high, width in ((row.difference_low, row.difference_high, 1.0),
                                 (row.adjusted_low, row.adjusted_high, 3.0)):
            ax.errorbar(row.improvement * factor, yi,
                        xerr=[[(row.improvement - low) * factor],
                              [(high - row.improvement) * factor]],
                        fmt="o", color=colour, capsize=3 if width == 1.0 else 0,
                        elinewidth=width)
    ax.axvline(0, color="black", linewidth=0.8)
    for edge in margin_edges(rows["margin"].iloc[0], metric):
        ax.axvline(edge * factor, color="black", linewidth=0.8, linestyle=":")
    # the setting only where it varies (the learning curve's fractions), shortened
    varies = rows["setting"].nunique() > 1
    ax.set_yticks(list(y), [f"{r['head']} vs {r.baseline}"
                            + (f" ({r.setting.split(' (')[0]})" if varies else "")
                            for _, r in rows.iterrows()], fontsize=7)
    # a long metric name wraps: the panels are 8 inches wide, about 60 characters of title
    ax.set(xlabel=xlabel, title=textwrap.fill(labels.get(metric, metric), 60))


def margin_edges(margin: float, metric: str) -> tuple[float, float]:
    """Where equivalence ends on the improvement axis: ``-margin`` and ``margin``, or for a
    time (tested as a ratio within ``[1 / (1 + margin), 1 + margin]``, improvement the ratio
    minus one) ``1 / (1 + margin) - 1`` and ``margin``: -9.1% and +10% for a 10% margin."""
    if metric in RELATIVE:
        return 1 / (1 + margin) - 1, margin
    return -margin, margin


def forest_rows(comparisons: pd.DataFrame) -> pd.DataFrame:
    """The comparisons the forest plot shows: the primary ones that were tested (not exact
    counts, and with an interval: a single seed, a comparison not made or bounded has
    none)."""
    if comparisons.empty:
        return comparisons
    return comparisons[(comparisons.role == "primary") & ~comparisons.exact.astype(bool)
                       & comparisons.adjusted_low.notna()]


def plot_forest(comparisons: pd.DataFrame, labels: Mapping[str, str]) -> plt.Figure:
    """Every primary comparison of ``forest_rows``: improvement and its interval, the
    equivalence margins dotted, coloured by verdict; one panel per metric."""
    rows = forest_rows(comparisons)
    if rows.empty:
        raise ValueError("no tested primary comparison to plot (forest_rows is empty)")
    metrics = list(dict.fromkeys(rows["metric"]))
    heights = [max(1.5, 0.28 * (rows["metric"] == m).sum() + 0.8) for m in metrics]
    total = sum(heights) + 0.9  # inches: the panels, then title and legend above them
    fig, axes = plt.subplots(len(metrics), 1, figsize=(8, total), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        _forest_panel(ax, rows[rows["metric"] == metric], metric, labels)
    handles = [plt.Line2D([], [], marker="o", linestyle="", color=c, label=v)
               for v, c in VERDICT_COLOURS.items()]
    # title and legend at fixed distances (in inches) from the top, the panels below them
    fig.suptitle("Every primary comparison (dotted: the equivalence margin)",
                 y=1 - 0.1 / total, va="top")
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 1 - 0.4 / total),
               ncols=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.75 / total))
    return fig


def plot_tuning(runs: pd.DataFrame, tuning: pd.DataFrame, heads: Sequence[str]) -> plt.Figure:
    """Final validation loss against the learning rate, one panel per head: a line per
    tuning seed, their mean dashed, the chosen rate circled (``docs/study.md``, "Training")."""
    shown = [h for h in heads if h in set(runs["head"])]
    columns = min(3, len(shown))
    rows = -(-len(shown) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.6 * rows), sharex=True,
                             squeeze=False)
    for ax, head in zip(axes.flat, shown, strict=False):
        ours = runs[runs["head"] == head]
        for seed, seed_runs in ours.groupby("seed"):
            ax.plot(seed_runs["lr"], seed_runs["val_loss"], marker="o", linewidth=1,
                    label=f"seed {seed}")
        mean = tuning[tuning["head"] == head].sort_values("lr")
        ax.plot(mean["lr"], mean["val_loss"], color="black", linestyle="--", linewidth=1,
                label="mean")
        chosen = mean[mean["chosen"].astype(bool)]
        ax.scatter(chosen["lr"], chosen["val_loss"], s=140, facecolors="none",
                   edgecolors="black", zorder=3, label="chosen")
        ax.set_xscale("log")
        ax.set_title(head, fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(shown):]:
        ax.set_visible(False)
    axes[0, 0].legend(fontsize=6)
    fig.supxlabel("Adam learning rate (log scale)", fontsize=9)
    fig.supylabel("final validation loss (nats)", fontsize=9)
    fig.tight_layout()
    return fig
