"""Numbers as the report shows them: each metric's display units (``_FORMATS``) and name
(``METRIC_LABELS``), a value or a difference in those units, ``mean [CI]`` cells, head
x metric tables of them, and frames as Markdown tables."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from gap_study.report.tables import head_order

__all__ = [
    "METRIC_LABELS",
    "RELATIVE",
    "format_improvement",
    "format_interval",
    "format_magnitude",
    "format_number",
    "format_stat",
    "grouped_stat_table",
    "markdown_table",
    "stat_table",
]

# how each metric is shown: (scale, decimals, unit); any other metric as (1, 3, "")
_FORMATS = {
    "params_total": (1, 0, ""), "params_head": (1, 0, ""),
    "train_accuracy": (100, 1, "%"), "test_accuracy": (100, 1, "%"),
    "overfit_gap": (100, 2, " pts"), "train_loss": (1, 3, ""), "test_loss": (1, 3, ""),
    "loss_gap": (1, 3, ""), "shift_accuracy_mean": (100, 1, "%"),
    "shift_accuracy_worst": (100, 1, "%"), "seconds_per_epoch": (1, 3, " s"),
    "seconds_per_step": (1000, 2, " ms"),
    "images_per_second": (1, 0, ""),
    "aligned_shift_accuracy": (100, 1, "%"), "other_shift_accuracy": (100, 1, "%"),
    "consistency": (100, 1, "%"), "flip_rate": (100, 1, "%"), "pointing_accuracy": (100, 1, "%"),
    "train_images": (1, 0, ""),
    "pointing_accuracy_shifted": (100, 1, "%"), "pointing_chance": (100, 1, "%"),
    "pointing_centre_prior": (100, 1, "%"), "pointing_centre_prior_shifted": (100, 1, "%"),
    "pointing_gradcam": (100, 1, "%"), "pointing_gradcam_shifted": (100, 1, "%"),
    "pointing_ink_shifted": (100, 1, "%"), "pointing_two_objects": (100, 1, "%"),
    "pointing_gradcam_two_objects": (100, 1, "%"), "pointing_ink_two_objects": (100, 1, "%"),
    "pointing_centre_prior_two_objects": (100, 1, "%"),
    "pointing_chance_two_objects": (100, 1, "%"), "recognised_two_objects": (100, 1, "%"),
    "pointing_gradcam_two_objects_recognised": (100, 1, "%"),
    "pointing_two_objects_recognised": (100, 1, "%"),
    "pointing_ink_two_objects_recognised": (100, 1, "%"),
    "consistency_exact": (100, 1, "%"), "flip_rate_all_pairs": (100, 1, "%"),
    "time_to_target": (1, 2, " s"), "epochs_to_target": (1, 1, ""),
    "val_accuracy": (100, 1, "%"),
}
# how the report names the metrics of the claims' comparisons
METRIC_LABELS = {
    "params_head": "trainable head parameters", "params_total": "whole-model parameters",
    "test_accuracy": "test accuracy", "test_loss": "test loss",
    "overfit_gap": "train - test accuracy", "loss_gap": "test - train loss",
    "consistency_exact": "exact consistency over the shift grid",
    "shift_accuracy_mean": "accuracy over the shift grid",
    "other_shift_accuracy": "accuracy at shifts that are not whole feature-map cells",
    "flip_rate_all_pairs": "class changes between neighbouring grid offsets",
    "consistency": "consistency of two random shifts", "flip_rate": "4-direction 1-pixel flips",
    "seconds_per_step": "time per training step", "time_to_target": "time to the target",
    "pointing_accuracy_shifted": "pointing accuracy on shifted images",
    "pointing_gradcam_shifted": "Grad-CAM pointing on shifted images",
    "pointing_gradcam_two_objects": "two-object Grad-CAM pointing, all objects",
    "pointing_two_objects": "two-object CAM pointing, all objects",
    "pointing_gradcam_two_objects_recognised": "two-object Grad-CAM pointing, objects "
                                               "recognised alone",
}
# metrics compared as ratios (a relative margin): an improvement is a fraction of the baseline
RELATIVE = frozenset({"seconds_per_step", "time_to_target"})


def format_number(value: float, metric: str, difference: bool = False, signed: bool = False,
                  unit: bool = True) -> str:
    """``value`` in the metric's display units; a difference of percentages is in points.
    ``signed``: with ``+`` or ``-``; not ``unit``: without a unit that is a word (`` pts``,
    `` ms``), for a number that follows one that has it."""
    scale, decimals, suffix = _FORMATS.get(metric, (1, 3, ""))
    if difference and suffix == "%":
        suffix = " pts"
    if not unit and suffix.startswith(" "):
        suffix = ""
    return f"{value * scale:{'+' if signed else ''},.{decimals}f}{suffix}"


def _improvement_number(value: float, metric: str, unit: bool = True) -> str:
    """An improvement, signed, in display units: a share of the baseline for a ``RELATIVE``
    metric; without a unit that is a word (`` pts``) if not ``unit``."""
    if metric in RELATIVE:
        return f"{value:+.0%}"
    return format_number(value, metric, difference=True, signed=True, unit=unit)


def format_magnitude(value: float, metric: str) -> str:
    """A size of difference, unsigned (a detectable difference, a margin): in points for a
    share, a share of the baseline for a ``RELATIVE`` metric."""
    if metric in RELATIVE:
        return f"{value:.0%}"
    return format_number(value, metric, difference=True)


def format_improvement(diff: float, low: float, high: float, metric: str) -> str:
    """``diff [low, high]``; just ``diff (exact)`` when the interval has no width; ``no
    comparison`` without a ``diff`` (a comparison not made). For a metric compared as a ratio
    (``RELATIVE``) the improvement is a share of the baseline."""
    if math.isnan(diff):
        return "no comparison"
    if math.isnan(low):
        return _improvement_number(diff, metric)
    if low == high:
        return f"{_improvement_number(diff, metric)} (exact)"
    return f"{_improvement_number(diff, metric)} {format_interval(low, high, metric)}"


def format_effect(improvement: float, adjusted: tuple[float, float],
                  difference: tuple[float, float], metric: str) -> str:
    """An improvement with the two adjusted intervals its verdict read:
    ``+1.0 pts [+0.5, +1.5] (difference [+0.2, +1.8])``; the second is left out where it is no
    interval (exact counts, one seed)."""
    text = format_improvement(improvement, *adjusted, metric)
    wider = format_interval(*difference, metric)
    return f"{text} (difference {wider})" if wider else text


def format_interval(low: float, high: float, metric: str) -> str:
    """``[low, high]`` of an improvement in the units of the improvement it follows (a unit
    that is a word is not repeated: ``[+0.5, +1.5]``); empty without an interval."""
    if math.isnan(low) or low == high:
        return ""
    bounds = (_improvement_number(bound, metric, unit=False) for bound in (low, high))
    return "[{}, {}]".format(*bounds)


def format_stat(row: pd.Series | Mapping[str, float], metric: str) -> str:
    """``mean [ci_low, ci_high]`` in the metric's display units. The standard deviation is
    left out: over n seeds the interval is ``mean ± t * std / sqrt(n)``, so it says as much,
    and it is what a reader compares (``aggregate.csv`` keeps ``std``)."""
    scale, decimals, unit = _FORMATS.get(metric, (1, 3, ""))
    if math.isnan(row["mean"]):
        return "n/a"
    text = f"{row['mean'] * scale:,.{decimals}f}"
    if not math.isnan(row["std"]) and row["std"] > 0:
        text += f" [{row['ci_low'] * scale:,.{decimals}f}, {row['ci_high'] * scale:,.{decimals}f}]"
    return text + unit


def stat_table(aggregate: pd.DataFrame, metrics: Sequence[str], labels: Sequence[str],
               heads: Sequence[str]) -> pd.DataFrame:
    """A head x metric table of formatted ``mean [CI]`` strings."""
    table = pd.DataFrame({"head": list(heads)})
    for metric, label in zip(metrics, labels, strict=True):
        rows = aggregate[aggregate.metric == metric].set_index("head")
        table[label] = [format_stat(rows.loc[h], metric) for h in heads]
    return table


def grouped_stat_table(aggregate: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                       labels: Sequence[str], heads: Sequence[str]) -> pd.DataFrame:
    """Like ``stat_table`` with one row per combination of the ``by`` columns (``head``
    first, in the order of ``heads``)."""
    rows = []
    keyed = aggregate.set_index([*by, "metric"])
    groups = aggregate[list(by)].drop_duplicates()
    groups = groups.sort_values(list(by), key=head_order(heads), kind="stable")
    for keys in groups.itertuples(index=False):
        row = dict(zip(by, keys, strict=True))
        for metric, label in zip(metrics, labels, strict=True):
            row[label] = format_stat(keyed.loc[(*keys, metric)], metric)
        rows.append(row)
    return pd.DataFrame(rows).astype(str)


def markdown_table(frame: pd.DataFrame) -> str:
    """``frame`` as a GitHub Markdown table, every cell as it is (no number parsing)."""
    return frame.to_markdown(index=False, disable_numparse=True)
