"""The claims' facts for the report: per claim, the verdict word of each primary metric with
its comparisons' counts and largest effect; the secondary comparisons' counts and the ones a
tested head lost; and every comparison in display units, for the report's linked tables."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gap_study.report.claims import largest_comparison
from gap_study.report.formatting import (
    METRIC_LABELS,
    format_effect,
    format_improvement,
    format_interval,
    format_magnitude,
    format_number,
)
from gap_study.report.protocol import CLAIMS, PROTOCOL

__all__ = ["ClaimFacts", "MetricVerdict", "Secondary", "claim_facts", "comparison_table",
           "secondary_facts"]

_COUNTS = ("better", "worse", "equivalent", "inconclusive")


@dataclass(frozen=True)
class MetricVerdict:
    """A claim's primary metric: its verdict word, the counts of its comparisons' verdicts,
    the equivalence margin (empty for exact counts) and the comparison with the largest effect
    among those decided better or worse (among all when none is: ``decided`` false)."""

    metric: str
    label: str
    verdict: str
    tests: int
    counts: dict[str, int]
    margin: str
    decided: bool
    strongest: str  # "`gap` vs `dense`, setting: +1.0 pts [0.5, 1.5]"
    strongest_verdict: str


@dataclass(frozen=True)
class ClaimFacts:
    name: str
    metrics: list[MetricVerdict]
    untested: list[str]  # its primary metrics, when none could be compared


def _metric_verdict(rows: pd.DataFrame, verdict: Mapping[str, Any]) -> MetricVerdict:
    metric = str(verdict["metric"])
    row, decided, setting = largest_comparison(rows)
    return MetricVerdict(
        metric, METRIC_LABELS.get(metric, metric), str(verdict["verdict"]),
        int(verdict["tests"]), {w: int(verdict[w]) for w in _COUNTS if verdict[w]},
        "" if rows["exact"].all() else f"±{format_magnitude(rows['margin'].iloc[0], metric)}",
        decided,
        f"`{row['head']}` vs `{row.baseline}`{setting}: {_effect(row)}", _verdict_word(row))


def claim_facts(comparisons: pd.DataFrame, verdicts: pd.DataFrame) -> list[ClaimFacts]:
    """Every claim of ``CLAIMS`` in order, with the verdicts of its primary metrics (from
    ``claim_verdicts``), or the primary metrics no comparison could be made on."""
    if verdicts.empty:
        return []
    primary = comparisons[comparisons.role == "primary"]
    claims = []
    for claim in CLAIMS:
        group = verdicts[verdicts.claim == claim]
        metrics = [_metric_verdict(primary[(primary.claim == claim)
                                           & (primary.metric == row.metric)], row._asdict())
                   for row in group.itertuples(index=False)]
        untested = [] if metrics else [t.metric for t in PROTOCOL
                                       if t.claim == claim and t.primary]
        claims.append(ClaimFacts(claim, metrics, untested))
    return claims


# a comparison's notes (``gap_study.report.claims``), in the order the report explains them
NOTES = ("underfits", "bounded", "not made")


@dataclass(frozen=True)
class Secondary:
    """The secondary comparisons: how many came out which way; every comparison a tested
    head lost, primary or secondary (``worse``: head, baseline, metric's name with
    "(secondary)" where it is one, improvement [CI]), so that a primary loss that is not its
    claim's largest effect is named too; ``notes``: the comparisons' notes (``underfits``,
    ``bounded``, ``not made``), each once, in ``NOTES``' order."""

    counts: dict[str, int]
    worse: list[tuple[str, str, str, str]]
    notes: tuple[str, ...] = ()


def secondary_facts(comparisons: pd.DataFrame) -> Secondary:
    """The secondary rows of ``comparisons`` counted by verdict, and every row a head lost."""
    rows = comparisons[comparisons.role == "secondary"] if len(comparisons) else comparisons
    counts = rows["verdict"].value_counts() if len(rows) else pd.Series(dtype=int)
    worse = comparisons[comparisons["verdict"] == "worse"] if len(comparisons) else comparisons
    notes = comparisons["note"] if "note" in comparisons else pd.Series(dtype=str)
    return Secondary(
        {w: int(counts[w]) for w in _COUNTS if counts.get(w, 0)},
        [(r.head, r.baseline, METRIC_LABELS.get(r.metric, r.metric)
          + (" (secondary)" if r.role == "secondary" else ""), _effect(r))
         for r in worse.itertuples()], tuple(n for n in NOTES if (notes == n).any()))


def _effect(row: Any) -> str:
    """A comparison's improvement with the two adjusted intervals its verdict read."""
    return format_effect(row.improvement, (row.adjusted_low, row.adjusted_high),
                         (row.difference_low, row.difference_high), row.metric)


def _verdict_word(row: Any) -> str:
    """A row's verdict, with ``trivial difference`` for an equivalent row whose difference
    is real but inside the margin, and its note (``NOTES``)."""
    word = "equivalent (trivial difference)" if bool(row.trivial) else str(row.verdict)
    return f"{word} ({row.note})" if getattr(row, "note", "") else word


def _value(value: float, metric: str) -> str:
    """A side's mean in display units; empty for a comparison not made."""
    return "" if math.isnan(value) else format_number(value, metric)


def comparison_table(rows: pd.DataFrame) -> pd.DataFrame:
    """The comparisons in display units, the verdict and the effect first, with the adjusted
    interval each verdict read (``comparisons.csv`` keeps the unadjusted ones too)."""
    def p_value(value: float) -> str:
        return "" if math.isnan(value) else f"{value:.3g}"

    return pd.DataFrame({
        "claim": rows.claim, "metric": rows.metric, "setting": rows.setting,
        "head": rows["head"], "baseline": rows.baseline,
        "verdict": [_verdict_word(row) for row in rows.itertuples()],
        "improvement [equivalence interval]": [
            format_improvement(d, lo, hi, m) for d, lo, hi, m in
            zip(rows.improvement, rows.adjusted_low, rows.adjusted_high, rows.metric,
                strict=True)],
        "[difference interval]": [
            format_interval(lo, hi, m) for lo, hi, m in
            zip(rows.difference_low, rows.difference_high, rows.metric, strict=True)],

        "head value": [_value(v, m) for v, m in zip(rows.head_mean, rows.metric, strict=True)],
        "baseline value": [_value(v, m) for v, m in zip(rows.baseline_mean, rows.metric,
                                                         strict=True)],
        "pairs": rows.n,
        "p (adjusted)": [p_value(v) for v in rows.p_difference_adjusted],
        "p equivalent (adjusted)": [p_value(v) for v in rows.p_equivalence_adjusted],
        "detectable": ["" if math.isnan(v) else format_magnitude(v, m)
                       for v, m in zip(rows.mde, rows.metric, strict=True)],
        "resampled": rows.sources, "verdict, t-test over seeds alone": rows.verdict_seeds_only,
    })
