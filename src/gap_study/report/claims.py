"""The declared tests run, and their verdicts (``docs/study.md``, "Statistics and verdicts").

``claim_comparisons`` runs ``gap_study.report.protocol.PROTOCOL``: every pooling head that
replaces the dense layers (``heads_under_test``) against each baseline, paired by seed (by
round for the timed steps); Holm within each claim's primary family, Benjamini-Hochberg
q-values over all secondary tests; every row ends ``better``, ``worse``, ``equivalent`` or
``inconclusive`` (``gap_study.report.comparisons``, ``gap_study.report.decisions``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from gap_study.report.comparisons import Comparison, Margin, comparison_row
from gap_study.report.decisions import judge_family
from gap_study.report.per_image import ImageTables, PerImageValues, is_recognised
from gap_study.report.protocol import PROTOCOL, ClaimTest, heads_under_test, setting_label

__all__ = ["claim_comparisons", "claim_verdicts", "claims_record", "largest_comparison"]


def _groups(test: ClaimTest, results: pd.DataFrame,
            step_times: pd.DataFrame) -> Iterator[tuple[str, float, pd.DataFrame, str]]:
    """``(setting, fraction, frame, pairing column)`` of each group of runs ``test``
    compares (fraction ``nan`` for the timed steps)."""
    if test.runs == "speed":
        yield (f"training steps timed in turns, {step_times['round'].nunique()} rounds",
               float("nan"), step_times, "round")
        return
    centred = results[results["train_shift"] == results["train_shift"].min()]
    fractions = sorted(centred["fraction"].unique()) if test.runs == "fractions" \
        else [centred["fraction"].max()]
    for fraction in fractions:
        runs = centred[centred["fraction"] == fraction]
        yield (setting_label(fraction, int(runs["train_shift"].iloc[0]),
                             int(runs["train_images"].iloc[0])), fraction, runs, "seed")


def _paired(frame: pd.DataFrame, test: ClaimTest, head: str, baseline: str,
            key: str) -> pd.DataFrame | None:
    """The head's values (``ours``) and the baseline's (``theirs``: a head, or a ``ref:``
    column of the head's own rows), matched on ``key``, and which of them are a run's lower
    bound (``test.at_least``) standing for a value it never reached; ``None`` when a side has
    no values."""
    ours = _side(frame[frame["head"] == head].set_index(key), test.metric, test.at_least)
    if baseline.startswith("ref:"):
        theirs = _side(frame[frame["head"] == head].set_index(key),
                       baseline.removeprefix("ref:"), None)
    else:
        theirs = _side(frame[frame["head"] == baseline].set_index(key), test.metric,
                       test.at_least)
    if ours is None or theirs is None:
        return None
    both = pd.concat([ours, theirs], axis=1, join="inner", keys=["ours", "theirs"])
    both = both[both["ours", "value"].notna() & both["theirs", "value"].notna()]
    return both if len(both) else None


def _side(rows: pd.DataFrame, metric: str, at_least: str | None) -> pd.DataFrame | None:
    """One side's ``value`` of ``metric`` per run, the run's lower bound ``at_least`` where it
    has none (``bounded``); ``None`` without any value."""
    if metric not in rows:
        return None
    values = rows[metric]
    bounds = rows[at_least] if at_least in rows else pd.Series(math.nan, index=rows.index)
    side = pd.DataFrame({"value": values.fillna(bounds),
                         "bounded": values.isna() & bounds.notna()})
    return None if side["value"].isna().all() else side


@dataclass(frozen=True)
class _Job:
    """One comparison ``PROTOCOL`` asks for: the runs of its setting (``frame``, paired on
    ``key``), the head, the baseline, and both sides' values in pair order with the pairs
    whose value is a lower bound (``pairs``: columns ``(ours|theirs, value|bounded)``)."""

    test: ClaimTest
    setting: str
    fraction: float
    frame: pd.DataFrame
    key: str
    head: str
    baseline: str
    pairs: pd.DataFrame

    @property
    def ours(self) -> pd.Series:
        return self.pairs["ours", "value"]

    @property
    def theirs(self) -> pd.Series:
        return self.pairs["theirs", "value"]

    def bounded(self) -> dict[str, int]:
        """How many of each side's values are lower bounds."""
        return {"bounded_head": int(self.pairs["ours", "bounded"].sum()),
                "bounded_baseline": int(self.pairs["theirs", "bounded"].sum())}


def _jobs(results: pd.DataFrame, step_times: pd.DataFrame,
          heads: Sequence[str]) -> Iterator[_Job]:
    """Every comparison ``PROTOCOL`` asks for where both sides have values (two heads on
    recognised objects may still share too few of them: ``claim_comparisons``)."""
    for test in PROTOCOL:
        for setting, fraction, frame, key in _groups(test, results, step_times):
            for head in heads_under_test(heads):
                for baseline in test.baselines:
                    pairs = _paired(frame, test, head, baseline, key)
                    if pairs is not None:
                        yield _Job(test, setting, fraction, frame, key, head, baseline, pairs)


# What a reference level is called where a head's name would stand.
REFERENCE_NAMES = {"pointing_centre_prior_shifted": "centre prior",
                   "pointing_ink_shifted": "ink map", "pointing_ink_two_objects": "ink map",
                   "pointing_ink_two_objects_recognised": "ink map"}


def _baseline_name(baseline: str) -> str:
    """A head's name, or the name of a ``ref:`` column's reference."""
    column = baseline.removeprefix("ref:")
    return REFERENCE_NAMES.get(column, column) if baseline.startswith("ref:") else baseline


def claim_comparisons(results: pd.DataFrame, step_times: pd.DataFrame, heads: Sequence[str],
                      margins: Mapping[str, float], *, per_image: PerImageValues | None = None,
                      bootstrap: Mapping[str, int] | None = None, alpha: float = 0.05,
                      confidence: float = 0.95) -> pd.DataFrame:
    """Every declared comparison with its verdict: one row per claim, metric, setting, head and
    baseline (columns of ``gap_study.report.comparisons.Comparison`` plus ``claim, metric,
    role, setting, head, baseline, margin, p_*_adjusted, verdict, verdict_seeds_only, note``;
    ``verdict_seeds_only``: the verdict of the paired t-test over seeds alone). Primary tests are
    adjusted by Holm within their claim and their minimum detectable difference is taken at
    Holm's first level, ``alpha / m``; secondary tests get BH q-values over all of them.

    Each comparison's bootstrap (``bootstrap``: ``resamples`` and ``seed``) resamples the seeds
    and the test images where ``per_image`` has both sides' values of the metric, and the
    pairs (seeds, or the speed stage's rounds) alone elsewhere. Two heads on recognised
    objects are compared on the objects both recognise (``PerImageValues.pair``), which needs
    ``per_image``: without it, or without enough shared objects, that comparison is not made
    (``note``: ``not made``), and its family counts it as a test that never rejects.

    A run without a value of a test's metric counts at its lower bound where the test names
    one (``ClaimTest.at_least``: a run that never reached the time target, at one epoch more
    than it trained); ``bounded_head`` and ``bounded_baseline`` count them. Such a row shows
    its numbers (of bounds) and decides nothing (``note``: ``bounded``; ``_judged``)."""
    jobs = [(job, _tables(job, per_image)) for job in _jobs(results, step_times, heads)]
    family = pd.Series([job.test.claim for job, _ in jobs if job.test.primary]).value_counts()
    rows = []
    for job, tables in jobs:
        test = job.test
        margin = _margin(test, margins)
        if _joint(job) and tables is None:
            row = _not_made()
        else:
            ours, theirs = tables.seed_means() if _joint(job) else (job.ours.to_numpy(),
                                                                    job.theirs.to_numpy())
            row = comparison_row(
                ours, theirs, lower_is_better=test.lower_is_better,
                margin=margin, confidence=confidence,
                alpha_for_mde=alpha / family[test.claim] if test.primary else alpha,
                exact=test.margin == "exact", tables=tables, replicates=f"{job.key}s",
                **dict(bootstrap or {}))
        rows.append({"claim": test.claim, "metric": test.metric,
                     "role": "primary" if test.primary else "secondary",
                     "setting": job.setting, "fraction": job.fraction, "head": job.head,
                     "baseline": _baseline_name(job.baseline), "margin": margin.value,
                     "lower_is_better": test.lower_is_better, "relative": margin.relative,
                     **row, **job.bounded()})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # what the test images change: the same families judged by the t-test over seeds alone
    seeds_only = _judged(table.assign(p_difference=table.p_difference_t,
                                      p_equivalence=table.p_equivalence_t, resampled=None),
                         alpha)
    table = _judged(table, alpha).drop(columns="resampled")
    table["verdict_seeds_only"] = seeds_only["verdict"]
    table["note"] = _notes(table, results)
    return table.reset_index(drop=True)


def _not_made() -> dict:
    """The row of a comparison the data cannot make: no pairs, no statistics."""
    nan = math.nan
    return dataclasses.asdict(Comparison(
        n=0, head_mean=nan, baseline_mean=nan, improvement=nan, ci_low=nan, ci_high=nan,
        p_difference=nan, p_equivalence=nan, mde=nan, exact=False, sources="not made"))


def _margin(test: ClaimTest, margins: Mapping[str, float]) -> Margin:
    return Margin(0.0 if test.margin == "exact" else margins[test.margin],
                  relative=test.margin == "time")


def _joint(job: _Job) -> bool:
    """Whether ``job`` compares two heads on the objects both recognise."""
    return is_recognised(job.test.metric) and not job.baseline.startswith("ref:")


def _tables(job: _Job, per_image: PerImageValues | None) -> ImageTables | None:
    """Both sides' per-image tables for ``job``'s bootstrap: seed-paired comparisons of a
    metric with an absolute margin, where ``per_image`` has them."""
    if per_image is None or job.key != "seed" or job.test.margin == "time":
        return None
    return per_image.pair(job.frame, job.head, job.baseline, job.test.metric,
                          seeds=job.ours.index.tolist())


def _judged(table: pd.DataFrame, alpha: float) -> pd.DataFrame:
    """``table``'s rows judged in their families: Holm within each claim's primary rows, BH
    over all secondary rows (``judge_family``), in ``table``'s order.

    1. A row with runs at their lower bound (``bounded_head``, ``bounded_baseline``) enters
       its family as a test that never rejects, p = 1 for both tests: the true values lie
       anywhere above the bounds, which can move the mean either way against its spread (a
       paired t-test is not monotone in one pair). Its own p-values stay in the table; its
       adjusted intervals and detectable difference are nan, since no level of the family
       would make them decide as its verdict does."""
    bounded = _bounded(table)
    tested = table.assign(p_difference=table["p_difference"].mask(bounded, 1.0),
                          p_equivalence=table["p_equivalence"].mask(bounded, 1.0))
    judged = [judge_family(group, adjust="holm", alpha=alpha)
              for _, group in tested[tested.role == "primary"].groupby("claim", sort=False)]
    judged.append(judge_family(tested[tested.role == "secondary"], adjust="bh", alpha=alpha))
    out = pd.concat(judged).sort_index()
    out[["p_difference", "p_equivalence"]] = table[["p_difference", "p_equivalence"]]
    out.loc[bounded, ["adjusted_low", "adjusted_high", "difference_low", "difference_high",
                      "mde"]] = float("nan")
    return out


def _bounded(table: pd.DataFrame) -> pd.Series:
    """Which rows have runs at their lower bound, on either side."""
    return (table["bounded_head"] + table["bounded_baseline"]) > 0


def _notes(table: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """Each row's note: ``not made`` (no pairs); ``bounded`` (some runs at their lower bound,
    ``_judged``); or ``underfits``, where a head's smaller train-test gap comes with lower
    train accuracy than its baseline's (the same centred runs) and a test accuracy that is not
    better by its own comparison: the gap shrank because the head fits its training set less,
    not because it generalises better."""
    centred = results[results["train_shift"] == results["train_shift"].min()]
    train = centred.groupby(["head", "fraction"])["train_accuracy"].mean()
    test_verdict = table[table.metric == "test_accuracy"].set_index(
        ["head", "baseline", "fraction"])["verdict"]
    notes = []
    for row, bounded in zip(table.itertuples(), _bounded(table), strict=True):
        key = (row.head, row.baseline, row.fraction)
        fits_less = (row.metric == "overfit_gap" and row.improvement > 0
                     and (row.head, row.fraction) in train.index
                     and (row.baseline, row.fraction) in train.index
                     and train[row.head, row.fraction] < train[row.baseline, row.fraction]
                     and test_verdict.get(key) != "better")
        notes.append("not made" if row.n == 0 else "bounded" if bounded
                     else "underfits" if fits_less else "")
    return notes


def claim_verdicts(comparisons: pd.DataFrame) -> pd.DataFrame:
    """One row per claim and primary metric: how many of its comparisons came out better,
    worse, equivalent and inconclusive, and the claim's word for it: ``holds`` (every
    comparison better), ``fails`` (none better, some worse), ``no difference`` (every one
    equivalent), ``mixed`` (some better, some not) or ``undecided`` (otherwise)."""
    rows = []
    primary = comparisons[comparisons.role == "primary"]
    for (claim, metric), group in primary.groupby(["claim", "metric"], sort=False):
        counts = group["verdict"].value_counts()
        better, worse = counts.get("better", 0), counts.get("worse", 0)
        equivalent = counts.get("equivalent", 0)
        word = ("holds" if better == len(group) else "mixed" if better
                else "fails" if worse else "no difference" if equivalent == len(group)
                else "undecided")
        rows.append({"claim": claim, "metric": metric, "verdict": word, "tests": len(group),
                     "better": better, "worse": worse, "equivalent": equivalent,
                     "inconclusive": counts.get("inconclusive", 0)})
    return pd.DataFrame(rows)


def largest_comparison(rows: pd.DataFrame) -> tuple[pd.Series, bool, str]:
    """The row with the largest effect among ``rows`` decided better or worse (among all of
    them when none is), whether one was decided, and ``", <setting>"`` when the rows span
    several settings (else ``""``): the comparison a claim's line names."""
    decided = rows[rows["verdict"].isin(["better", "worse"])]
    pool = decided if len(decided) else rows
    # a comparison not made has no effect: it is named only where no other was made
    top = pool.loc[pool["improvement"].abs().fillna(-1.0).idxmax()]
    return top, bool(len(decided)), f", {top.setting}" if rows["setting"].nunique() > 1 else ""


def claims_record(comparisons: pd.DataFrame, verdicts: pd.DataFrame) -> dict[str, dict]:
    """``reports/claims.json``, the verdicts as DVC metrics: per claim and primary metric, the
    verdict word, how many comparisons came out which way, and the comparison with the largest
    effect among those decided (among all when none is): its name, verdict and note
    (``largest_verdict``, ``largest_note``), its effect (``improvement``, raw units; a ratio
    minus one for times) and the adjusted equivalence and difference intervals its verdict
    read (``null`` where there is none: one seed, a comparison not made or bounded)."""
    record: dict[str, dict] = {}
    primary = comparisons[comparisons.role == "primary"] if len(comparisons) else comparisons
    for row in verdicts.itertuples(index=False):
        rows = primary[(primary.claim == row.claim) & (primary.metric == row.metric)]
        top, _, setting = largest_comparison(rows)
        record.setdefault(row.claim, {})[row.metric] = {
            "verdict": row.verdict,
            **{word: int(getattr(row, word)) for word in ("tests", "better", "worse",
                                                          "equivalent", "inconclusive")},
            "largest": f"{top['head']} vs {top.baseline}{setting}",
            "largest_verdict": str(top.verdict),
            "largest_note": str(top.get("note", "")),
            **{key: _finite_or_none(top[column]) for key, column in (
                ("effect", "improvement"), ("adjusted_low", "adjusted_low"),
                ("adjusted_high", "adjusted_high"), ("difference_low", "difference_low"),
                ("difference_high", "difference_high"))}}
    return record


def _finite_or_none(value: float) -> float | None:
    """JSON has no nan: an interval a single seed cannot give is ``null``."""
    return float(value) if math.isfinite(float(value)) else None

