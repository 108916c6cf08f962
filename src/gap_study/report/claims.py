"""The write-up's claims as declared tests, and their verdicts (``docs/study.md``, "The
write-up's claims" and "Statistics and verdicts").

``PROTOCOL`` is the pre-declared analysis: for every claim its primary metrics (the ones its
verdict rests on) and secondary ones (reported, labelled secondary), which way is better, the
equivalence margin, the baselines and the runs compared. ``claim_comparisons`` runs it:
every pooling head that replaces the dense layers (``heads_under_test``) against each baseline,
paired by seed (by round for the timed steps); Holm within each claim's primary family,
Benjamini-Hochberg q-values over all secondary tests; every row ends ``better``, ``worse``,
``equivalent`` or ``inconclusive`` (``gap_study.report.comparisons``).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pandas as pd

from gap_study.nets.architecture import HEADS_UNDER_TEST
from gap_study.report.comparisons import Margin, comparison_row
from gap_study.report.decisions import judge_family
from gap_study.report.per_image import ImageTables, PerImageValues, is_recognised

__all__ = [
    "CHANGED_IN",
    "CLAIMS",
    "PROTOCOL",
    "PROTOCOL_VERSION",
    "ClaimTest",
    "changed_between",
    "claim_comparisons",
    "claim_verdicts",
    "claims_record",
    "heads_under_test",
    "largest_comparison",
    "setting_label",
]

# The version of ``docs/study.md``'s protocol that ``PROTOCOL`` and the statistics implement
# (``CHANGELOG.md`` lists what each version changed).
PROTOCOL_VERSION = 5
# The primary tests whose analysis a version changed, as (claim, metric): their verdicts are
# not compared across that version (``gap_study.replicate``).
CHANGED_IN: dict[int, frozenset[tuple[str, str]]] = {
    5: frozenset({("feature maps tied to classes", "pointing_gradcam_two_objects_recognised")}),
}

# The write-up's claims, in the report's order (its words for each: ``docs/study.md``, "The
# write-up's claims")
CLAIMS = ("fewer parameters", "less overfitting", "more translation robust", "faster training",
          "feature maps tied to classes")


@dataclass(frozen=True)
class ClaimTest:
    """A declared test: ``metric`` of each tested head against each of ``baselines`` (head
    names, or ``ref:<column>`` for a reference level measured on the same images), on the
    runs ``runs`` names (``main``: whole training set, centred; ``fractions``: each training
    fraction, centred; ``speed``: the speed stage's rounds), with margin ``margin`` (a key
    of ``report.margins``, or ``exact``)."""

    claim: str
    metric: str
    lower_is_better: bool
    margin: str
    primary: bool
    baselines: tuple[str, ...] = ("dense",)
    runs: str = "main"


DENSE_BASELINES = ("dense", "dense_dropout")
PROTOCOL: tuple[ClaimTest, ...] = (
    ClaimTest("fewer parameters", "params_head", True, "exact", True),
    ClaimTest("fewer parameters", "params_total", True, "exact", False),
    ClaimTest("less overfitting", "test_accuracy", False, "accuracy", True, DENSE_BASELINES,
         "fractions"),
    ClaimTest("less overfitting", "test_loss", True, "loss", True, DENSE_BASELINES, "fractions"),
    ClaimTest("less overfitting", "overfit_gap", True, "accuracy", False, DENSE_BASELINES,
         "fractions"),
    ClaimTest("less overfitting", "loss_gap", True, "loss", False, DENSE_BASELINES, "fractions"),
    ClaimTest("more translation robust", "consistency_exact", False, "consistency", True),
    ClaimTest("more translation robust", "shift_accuracy_mean", False, "accuracy", False),
    ClaimTest("more translation robust", "other_shift_accuracy", False, "accuracy", False),
    ClaimTest("more translation robust", "flip_rate_all_pairs", True, "consistency", False),
    ClaimTest("more translation robust", "consistency", False, "consistency", False),
    ClaimTest("more translation robust", "flip_rate", True, "consistency", False),
    ClaimTest("faster training", "seconds_per_step", True, "time", True, runs="speed"),
    ClaimTest("faster training", "time_to_target", True, "time", True),
    # two objects of different classes per canvas: a class's map must find its own object, which
    # the class-agnostic ink map does for at most one of the two; Grad-CAM scores every head.
    # Protocol 4: only the objects the head recognises alone at their position count, so that
    # a head that cannot recognise a moved object does not lose pointing for it; gap_hidden
    # (global pooling, then a hidden layer) asks whether removing the fully connected layers,
    # as the write-up says, is what ties the maps to the classes
    ClaimTest("feature maps tied to classes", "pointing_gradcam_two_objects_recognised", False,
              "accuracy", True,
              ("dense", "gap_hidden", "ref:pointing_ink_two_objects_recognised")),
    ClaimTest("feature maps tied to classes", "pointing_gradcam_two_objects", False, "accuracy",
              False, ("dense", "ref:pointing_ink_two_objects")),
    ClaimTest("feature maps tied to classes", "pointing_two_objects", False, "accuracy", False,
              ("ref:pointing_ink_two_objects",)),
    # one object on a blank canvas: any map that finds ink points at it
    ClaimTest("feature maps tied to classes", "pointing_accuracy_shifted", False, "accuracy",
              False, ("ref:pointing_centre_prior_shifted",)),
    ClaimTest("feature maps tied to classes", "pointing_gradcam_shifted", False, "accuracy", False,
         ("dense", "ref:pointing_ink_shifted")),
)


def changed_between(first: int, second: int) -> frozenset[tuple[str, str]]:
    """The (claim, metric) tests whose analysis changed between protocol versions ``first``
    and ``second`` (either order)."""
    low, high = sorted((first, second))
    return frozenset().union(*(tests for version, tests in CHANGED_IN.items()
                               if low < version <= high))


def heads_under_test(heads: Sequence[str]) -> list[str]:
    """The heads the claims are about, in order: those whose global pooling replaces the dense
    layers (the pooled linear heads and ``nin``). The other heads are baselines and controls."""
    return [h for h in heads if h in HEADS_UNDER_TEST]


def setting_label(fraction: float, train_shift: int, train_images: int | None = None) -> str:
    """How a group of runs was trained, in words."""
    data = "all training images" if fraction == 1 else f"{fraction:.0%} of the training images"
    if train_images is not None:
        data += f" ({train_images:,})"
    moves = "centred" if train_shift == 0 else f"random shifts up to {train_shift} px"
    return f"{data}, {moves}"


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


def _paired(frame: pd.DataFrame, head: str, baseline: str, metric: str,
            key: str) -> tuple[pd.Series, pd.Series] | None:
    """The head's values and the baseline's (a head, or a ``ref:`` column of the head's own
    rows), matched on ``key``; ``None`` when either is missing."""
    ours = frame[frame["head"] == head].set_index(key)
    if metric not in ours or ours[metric].isna().all():
        return None
    if baseline.startswith("ref:"):
        theirs = ours[baseline.removeprefix("ref:")]
    else:
        other = frame[frame["head"] == baseline].set_index(key)
        if other.empty or other[metric].isna().all():
            return None
        theirs = other[metric]
    both = pd.concat([ours[metric], theirs], axis=1, join="inner").dropna()
    return (both.iloc[:, 0], both.iloc[:, 1]) if len(both) else None


@dataclass(frozen=True)
class _Job:
    """One comparison ``PROTOCOL`` asks for: the runs of its setting (``frame``, paired on
    ``key``), the head, the baseline and both sides' values in pair order."""

    test: ClaimTest
    setting: str
    fraction: float
    frame: pd.DataFrame
    key: str
    head: str
    baseline: str
    ours: pd.Series
    theirs: pd.Series


def _jobs(results: pd.DataFrame, step_times: pd.DataFrame,
          heads: Sequence[str]) -> Iterator[_Job]:
    """Every comparison ``PROTOCOL`` asks for that the data can answer."""
    for test in PROTOCOL:
        for setting, fraction, frame, key in _groups(test, results, step_times):
            for head in heads_under_test(heads):
                for baseline in test.baselines:
                    pair = _paired(frame, head, baseline, test.metric, key)
                    if pair is not None:
                        yield _Job(test, setting, fraction, frame, key, head, baseline, *pair)


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
    ``per_image``: without it, or without enough shared objects, that comparison is not made,
    and its claim's Holm family is one smaller."""
    jobs = [(job, _tables(job, per_image)) for job in _jobs(results, step_times, heads)]
    jobs = [(job, tables) for job, tables in jobs if tables is not None or not _joint(job)]
    family = pd.Series([job.test.claim for job, _ in jobs if job.test.primary]).value_counts()
    rows = []
    for job, tables in jobs:
        test = job.test
        margin = _margin(test, margins)
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
                     **row})
    table = pd.DataFrame(rows)
    if table.empty:
        return table
    # what the test images change: the same families judged by the t-test over seeds alone
    seeds_only = _judged(table.assign(p_difference=table.p_difference_t,
                                      p_equivalence=table.p_equivalence_t, resampled=None),
                         alpha)
    table = _judged(table, alpha).drop(columns="resampled")
    table["verdict_seeds_only"] = seeds_only["verdict"]
    table["note"] = _underfitting_notes(table, results)
    return table.reset_index(drop=True)


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
    over all secondary rows (``judge_family``), in ``table``'s order."""
    judged = [judge_family(group, adjust="holm", alpha=alpha)
              for _, group in table[table.role == "primary"].groupby("claim", sort=False)]
    judged.append(judge_family(table[table.role == "secondary"], adjust="bh", alpha=alpha))
    return pd.concat(judged).sort_index()


def _underfitting_notes(table: pd.DataFrame, results: pd.DataFrame) -> list[str]:
    """``underfits`` where a head's smaller train-test gap comes with lower train accuracy
    than its baseline's (the same centred runs) and a test accuracy that is not better by
    its own comparison: the gap shrank because the head fits its training set less, not
    because it generalises better."""
    centred = results[results["train_shift"] == results["train_shift"].min()]
    train = centred.groupby(["head", "fraction"])["train_accuracy"].mean()
    test_verdict = table[table.metric == "test_accuracy"].set_index(
        ["head", "baseline", "fraction"])["verdict"]
    notes = []
    for row in table.itertuples():
        key = (row.head, row.baseline, row.fraction)
        fits_less = (row.metric == "overfit_gap" and row.improvement > 0
                     and (row.head, row.fraction) in train.index
                     and (row.baseline, row.fraction) in train.index
                     and train[row.head, row.fraction] < train[row.baseline, row.fraction]
                     and test_verdict.get(key) != "better")
        notes.append("underfits" if fits_less else "")
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
    top = pool.loc[pool["improvement"].abs().idxmax()]
    return top, bool(len(decided)), f", {top.setting}" if rows["setting"].nunique() > 1 else ""


def claims_record(comparisons: pd.DataFrame, verdicts: pd.DataFrame) -> dict[str, dict]:
    """``reports/claims.json``, the verdicts as DVC metrics: per claim and primary metric, the
    verdict word, how many comparisons came out which way, and the comparison with the largest
    effect among those decided (among all when none is): its effect (``improvement``, raw
    units; a ratio minus one for times) and the adjusted equivalence and difference intervals
    its verdict read (``null`` where there is none: one seed)."""
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
            **{key: _finite_or_none(top[column]) for key, column in (
                ("effect", "improvement"), ("adjusted_low", "adjusted_low"),
                ("adjusted_high", "adjusted_high"), ("difference_low", "difference_low"),
                ("difference_high", "difference_high"))}}
    return record


def _finite_or_none(value: float) -> float | None:
    """JSON has no nan: an interval a single seed cannot give is ``null``."""
    return float(value) if math.isfinite(float(value)) else None

