"""The report's opening: a summary of one sentence per claim, then the claims section with the
verdicts per claim and metric, the forest plot and the tables of every comparison
(``docs/study.md``, "Statistics and verdicts")."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd

from gap_study.report.claims import PROTOCOL, QUOTES, heads_under_test
from gap_study.report.formatting import (
    RELATIVE,
    format_improvement,
    format_number,
    markdown_table,
)

__all__ = ["METRIC_LABELS", "claims_section", "summary_section"]

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
    "pointing_gradcam_two_objects": "Grad-CAM pointing at each class's own object on "
                                    "two-object canvases",
    "pointing_two_objects": "CAM pointing at each class's own object on two-object canvases",
}


def _margin_text(metric: str, margin: float) -> str:
    if metric in RELATIVE:
        return f"±{margin:.0%}"
    return f"±{format_number(margin, metric, difference=True)}"


def _strongest(rows: pd.DataFrame) -> str:
    """The comparison with the largest effect among those found better or worse (among all,
    when none is), in words: the sentence then names a row its verdict rests on."""
    decided = rows[rows["verdict"].isin(["better", "worse"])]
    pool, label = (decided, "largest decided") if len(decided) else (rows, "largest")
    row = pool.loc[pool["improvement"].abs().idxmax()]
    setting = f", {row.setting}" if rows["setting"].nunique() > 1 else ""
    return (f"{label}: `{row['head']}` vs `{row.baseline}`{setting}: "
            f"{format_improvement(row.improvement, row.ci_low, row.ci_high, row.metric)}, "
            f"{row.verdict}")


def _metric_sentence(metric: str, rows: pd.DataFrame, verdict: Mapping[str, object]) -> str:
    counts = ", ".join(f"{verdict[word]} {word}" for word in
                       ("better", "worse", "equivalent", "inconclusive") if verdict[word])
    margin = "" if rows["exact"].all() else \
        f" (equivalent: within {_margin_text(metric, rows['margin'].iloc[0])})"
    return (f"{METRIC_LABELS.get(metric, metric)} — **{verdict['verdict']}**: {counts} of "
            f"{verdict['tests']} comparisons{margin}; {_strongest(rows)}")


def summary_section(comparisons: pd.DataFrame, verdicts: pd.DataFrame) -> list[str]:
    """"In one minute": one sentence per claim, per primary metric its verdict and the largest
    effect, or that none of its primary comparisons could be made; the words are computed from
    ``claim_verdicts``, never typed in."""
    lines = ["## In one minute", ""]
    if verdicts.empty:
        return [*lines, "No claim could be tested: `heads` needs `dense` (and `dense_dropout`) "
                "and at least one pooling head.", ""]
    primary = comparisons[comparisons.role == "primary"]
    for claim, quote in QUOTES.items():
        group = verdicts[verdicts.claim == claim]
        if group.empty:  # e.g. the map claim without two-object canvases
            metrics = ", ".join(f"`{test.metric}`" for test in PROTOCOL
                                if test.claim == claim and test.primary)
            lines.append(f"- **{claim.capitalize()}** (\"{quote}\"): not tested here: no "
                         f"comparison of its primary metrics ({metrics}) could be made.")
            continue
        parts = [_metric_sentence(row.metric, primary[(primary.claim == claim)
                                                      & (primary.metric == row.metric)],
                                  row._asdict())
                 for row in group.itertuples(index=False)]
        lines.append(f"- **{claim.capitalize()}** (\"{quote}\"): " + "; ".join(parts) + ".")
    return [*lines, ""]


def _comparison_table(rows: pd.DataFrame, level: str) -> pd.DataFrame:
    """The comparisons as the report shows them, values in display units."""
    def p_value(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.3g}"

    # the verdict and the effect first: on a narrow screen the p-values scroll out of sight
    return pd.DataFrame({
        "claim": rows.claim, "metric": rows.metric, "setting": rows.setting,
        "head": rows["head"], "baseline": rows.baseline,
        "verdict": [f"{v} ({n})" if n else v for v, n in zip(rows.verdict, rows.note,
                                                             strict=True)],
        f"improvement [{level} CI]": [format_improvement(d, lo, hi, m) for d, lo, hi, m in
                                      zip(rows.improvement, rows.ci_low, rows.ci_high,
                                          rows.metric, strict=True)],
        "head value": [format_number(v, m) for v, m in zip(rows.head_mean, rows.metric,
                                                            strict=True)],
        "baseline value": [format_number(v, m) for v, m in zip(rows.baseline_mean, rows.metric,
                                                                strict=True)],
        "p (adjusted)": [p_value(v) for v in rows.p_difference_adjusted],
        "p equivalent (adjusted)": [p_value(v) for v in rows.p_equivalence_adjusted],
        "detectable": ["" if math.isnan(v) else format_improvement(v, math.nan, math.nan, m)
                       for v, m in zip(rows.mde, rows.metric, strict=True)],
    })


def claims_section(comparisons: pd.DataFrame, verdicts: pd.DataFrame, heads: Sequence[str],
                   figures: Mapping[str, str], alpha: float, level: str) -> list[str]:
    """Section "The claims, tested": how, the verdicts per claim and metric, the forest plot,
    then every primary and secondary comparison."""
    lines = ["## The claims, tested", ""]
    if comparisons.empty:
        return [*lines, "No claim could be tested here: add `dense` and a pooling head to "
                "`heads`.", ""]
    primary, secondary = (comparisons[comparisons.role == role]
                          for role in ("primary", "secondary"))
    return [
        *lines,
        f"Tested heads: {', '.join(f'`{h}`' for h in heads_under_test(heads))} (their global "
        "pooling replaces the dense layers); the others are baselines and controls. Every "
        "comparison pairs the head with its baseline seed by seed (the same initial backbone, "
        "data order and evaluation offsets; the speed stage's rounds for step times). A claim's "
        f"primary comparisons form one family, adjusted by Holm; at level {alpha} a row is "
        "*better* or *worse* when the adjusted paired t-test rejects no difference, "
        "*equivalent* when the adjusted two one-sided tests put the difference inside the "
        "declared margin, and *inconclusive* otherwise. Column *detectable* is the smallest "
        "improvement the test would find with 80% power at its observed spread. Secondary "
        "metrics get Benjamini-Hochberg q-values instead and decide no claim.",
        "",
        markdown_table(verdicts),
        "",
        (f"![Every primary comparison]({figures['forest']})" if "forest" in figures else
         "Nothing beyond exact counts could be tested: a paired test needs at least two seeds "
         "(`train.seeds`)."),
        "",
        "### Primary comparisons",
        "",
        markdown_table(_comparison_table(primary, level)),
        "",
        "### Secondary comparisons",
        "",
        "\"underfits\": the head's smaller train-test gap comes with lower train accuracy than "
        "its baseline's and no better test accuracy; it fits less, not generalises better.",
        "",
        markdown_table(_comparison_table(secondary, level)) if len(secondary) else "(none)",
        "",
    ]
