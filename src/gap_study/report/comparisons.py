"""One pre-declared comparison (since protocol version 4; ``docs/study.md``, section "Statistics and
verdicts"): one head against a baseline on one metric, with the tests and intervals its verdict
reads (``gap_study.report.decisions`` adjusts them within families and decides).

What is computed, and why:

- **Paired by seed.** Heads share, per seed, the initial backbone weights, the data order and the
  evaluation offsets (the speed stage pairs its rounds), so seed ``i`` of the head is compared
  with seed ``i`` of the baseline. Pairing removes the seed-to-seed variation that both heads
  share, which an unpaired (Welch) comparison would count as noise.
- **Two tests, and a row needs both.** The paired t-test over the pairs
  (``scipy.stats.ttest_rel``; equivalence by two one-sided tests,
  ``statsmodels.stats.weightstats.ttost_paired``), and a paired bootstrap over what varies
  (``gap_study.report.bootstrap``): the seeds and then the test images where per-image values
  exist, the pairs alone elsewhere. With 5 seeds the percentile bootstrap is too narrow where
  seeds dominate, and the t-test ignores the test images; each p-value is the larger of the
  two (an intersection-union test, valid when either test is) and each interval the smallest
  holding both, so a decision never disagrees with its interval. The two tests' own results
  stay in the row (``t_*``, ``bootstrap_*``, ``p_*_t``, ``p_*_bootstrap``).
- **Margins** are absolute (metric units) or relative (times: tested on log values, so the
  ratio head/baseline must lie within ``[1/(1+m), 1+m]``).
- **Minimum detectable difference.** Every comparison reports the smallest improvement it
  detects with 80% power: the larger of a two-sided paired t-test's with its ``n`` pairs and
  observed spread (``statsmodels.stats.power.TTestPower``) and a normal test's with the
  bootstrap's standard error, so an ``inconclusive`` verdict says how large an effect the data
  could have found.
- **Exact comparisons.** A metric declared exact (parameter counts) is the same for every seed:
  no test, ``exact=True``, verdict by its sign. Whether a metric is exact is declared, never
  read from the data: two seeds of a measured metric can agree by chance (accuracy moves in
  steps of one test image), and one seed has no spread at all, yet neither is exact.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.power import TTestPower
from statsmodels.stats.weightstats import ttost_paired

from gap_study.report.bootstrap import (
    DEFAULT_RESAMPLES,
    BootstrapDistribution,
    one_stage,
    two_stage,
)
from gap_study.report.per_image import ImageTables

__all__ = ["Comparison", "Margin", "compare_paired", "comparison_row", "interval_at"]

_POWER = 0.8
# A spread of the paired differences this small relative to the values is rounding, not noise.
_ZERO_SPREAD = 16 * np.finfo(float).eps


@dataclass(frozen=True)
class Margin:
    """An equivalence margin: ``value`` in the metric's own units (``relative=False``, e.g. 0.01
    for one accuracy point) or as a fraction of the baseline (``relative=True``, e.g. 0.10 for
    time: equivalent when the ratio head/baseline lies within ``[1/(1+0.10), 1+0.10]``, i.e. the
    mean log ratio within ``±log(1.10)``)."""

    value: float
    relative: bool = False

    def __post_init__(self) -> None:
        if not (math.isfinite(self.value) and self.value >= 0):
            raise ValueError(f"a margin must be finite and >= 0, got {self.value!r}")


@dataclass(frozen=True)
class Comparison:
    """One head against its baseline on one metric, paired by seed (or by round for timing)."""

    n: int
    head_mean: float
    baseline_mean: float
    improvement: float
    ci_low: float
    ci_high: float
    p_difference: float
    p_equivalence: float
    mde: float
    exact: bool
    # the paired difference on the tested scale (log values for a relative margin): its mean,
    # standard error and degrees of freedom over the pairs, and the bootstrap's resampled
    # means, from which ``interval_at`` gives any level
    difference: float = math.nan
    standard_error: float = math.nan
    df: float = math.nan
    resampled: np.ndarray | None = dataclasses.field(default=None, repr=False)
    # what the bootstrap resampled ("seeds and test images", or the pairs alone) and the two
    # tests' own unadjusted results, which ``p_*`` and ``ci_*`` combine
    sources: str = ""
    t_low: float = math.nan
    t_high: float = math.nan
    bootstrap_low: float = math.nan
    bootstrap_high: float = math.nan
    p_difference_t: float = math.nan
    p_equivalence_t: float = math.nan
    p_difference_bootstrap: float = math.nan
    p_equivalence_bootstrap: float = math.nan


def _pairs(h: np.ndarray, b: np.ndarray, margin: Margin) -> tuple[np.ndarray, np.ndarray]:
    """The two sides as tested (log values for a relative margin), checked."""
    if len(h) != len(b):
        raise ValueError(f"head and baseline must pair up: {len(h)} head values, "
                         f"{len(b)} baseline values")
    if len(h) == 0:
        raise ValueError("no pairs to compare: 0 head values, 0 baseline values")
    if not (np.isfinite(h).all() and np.isfinite(b).all()):
        raise ValueError("head and baseline values must be finite")
    if margin.relative:
        if (h <= 0).any() or (b <= 0).any():
            raise ValueError("a relative margin needs values > 0 on both sides")
        return np.log(h), np.log(b)
    return h, b


def _has_spread(h: np.ndarray, b: np.ndarray) -> bool:
    """Whether the paired difference varies between pairs beyond float rounding."""
    d = h - b
    scale = max(float(np.abs(h).max()), float(np.abs(b).max()), 1.0)
    return bool(np.ptp(d) > _ZERO_SPREAD * scale)


def _improvement(mean_log_or_diff: float, *, lower_is_better: bool, relative: bool) -> float:
    """Signed so that positive is better; for a relative margin a ratio minus one."""
    signed = -mean_log_or_diff if lower_is_better else mean_log_or_diff
    return math.expm1(signed) if relative else signed


def _mde(d: np.ndarray, alpha: float, relative: bool) -> float:
    """Smallest |improvement| a two-sided paired t-test detects with 80% power, or nan."""
    try:
        effect = TTestPower().solve_power(effect_size=None, nobs=len(d), alpha=alpha,
                                          power=_POWER, alternative="two-sided")
    except (ValueError, RuntimeError, ZeroDivisionError):
        return math.nan
    effect = float(np.squeeze(effect))
    if not math.isfinite(effect):
        return math.nan
    on_scale = effect * float(d.std(ddof=1))
    return math.expm1(on_scale) if relative else on_scale


def compare_paired(head: Sequence[float], baseline: Sequence[float], *, lower_is_better: bool,
                   margin: Margin, confidence: float = 0.95, alpha_for_mde: float = 0.05,
                   exact: bool = False, tables: ImageTables | None = None,
                   replicates: str = "seeds", resamples: int = DEFAULT_RESAMPLES,
                   seed: int = 0) -> Comparison:
    """Compare ``head`` with ``baseline`` (element ``i`` = the same seed or round) on one metric.

    With an absolute margin the paired differences ``head - baseline`` are tested; with a
    relative one their log ratios, and ``improvement``, its interval and ``mde`` are ratios
    minus one (``baseline/head - 1`` when lower is better, ``head/baseline - 1`` otherwise).
    ``exact``: the metric is declared exact (a count); its difference must then be the same for
    every pair. A single pair of a measured metric gets nan statistics (inconclusive).

    The bootstrap (``resamples`` draws from ``seed``) resamples the pairs (``replicates``) and
    then the test images of ``tables`` (both sides' per-image values, in pair order), or the
    pairs alone without them, on the tested scale.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must lie in (0, 1), got {confidence!r}")
    raw_h, raw_b = np.asarray(head, dtype=float).ravel(), np.asarray(baseline, dtype=float).ravel()
    h, b = _pairs(raw_h, raw_b, margin)
    sign = {"lower_is_better": lower_is_better, "relative": margin.relative}
    d = h - b
    improvement = _improvement(float(d.mean()), **sign)
    common = {"n": len(d), "head_mean": float(raw_h.mean()),
              "baseline_mean": float(raw_b.mean()), "improvement": improvement}
    if exact:
        if _has_spread(h, b):
            raise ValueError("a metric declared exact differs between pairs: "
                             f"differences {d.tolist()}")
        return Comparison(**common, ci_low=improvement, ci_high=improvement,
                          p_difference=math.nan, p_equivalence=math.nan, mde=math.nan,
                          exact=True)
    if len(d) < 2:  # no spread to test against
        return Comparison(**common, ci_low=math.nan, ci_high=math.nan, p_difference=math.nan,
                          p_equivalence=math.nan, mde=math.nan, exact=False)
    if tables is not None and margin.relative:
        raise ValueError("per-image tables are for metrics with an absolute margin")
    bound = math.log1p(margin.value) if margin.relative else margin.value
    p_difference_t, t_interval, p_equivalence_t = _t_tests(h, b, bound, confidence)
    boot = (one_stage(b, h, resamples=resamples, seed=seed) if tables is None else
            two_stage(tables.baseline, tables.head, a_weights=tables.baseline_weights,
                      b_weights=tables.head_weights, resamples=resamples, seed=seed))
    p_equivalence_bootstrap = boot.tost_p_value(bound) if bound > 0 else math.nan
    t_ends, bootstrap_ends = _ends(t_interval, **sign), _ends(boot.interval(1 - confidence), **sign)
    low, high = _combine(t_ends, bootstrap_ends)
    return Comparison(**common, ci_low=low, ci_high=high,
                      p_difference=_larger(p_difference_t, boot.p_value()),
                      p_equivalence=_larger(p_equivalence_t, p_equivalence_bootstrap),
                      mde=_larger(_mde(d, alpha_for_mde, margin.relative),
                                  _bootstrap_mde(boot, alpha_for_mde, margin.relative)),
                      exact=False, difference=float(d.mean()),
                      standard_error=float(d.std(ddof=1) / math.sqrt(len(d))),
                      df=float(len(d) - 1), resampled=boot.resampled,
                      sources=replicates if tables is None else f"{replicates} and test images",
                      t_low=t_ends[0], t_high=t_ends[1], bootstrap_low=bootstrap_ends[0],
                      bootstrap_high=bootstrap_ends[1], p_difference_t=p_difference_t,
                      p_equivalence_t=p_equivalence_t,
                      p_difference_bootstrap=boot.p_value(),
                      p_equivalence_bootstrap=p_equivalence_bootstrap)


def _t_tests(h: np.ndarray, b: np.ndarray, bound: float,
             confidence: float) -> tuple[float, tuple[float, float], float]:
    """The paired t-test's p-value for no difference, its ``confidence`` interval of the mean
    difference, and the TOST p-value for equivalence within ``(-bound, bound)``."""
    with warnings.catch_warnings():
        # a difference without spread (seeds that agree) makes both libraries warn; their
        # answers (p = 0 for a constant non-zero difference, nan for none) are the right ones
        warnings.simplefilter("ignore", RuntimeWarning)
        test = stats.ttest_rel(h, b)
        ci = test.confidence_interval(confidence_level=confidence)
        p_equivalence = float(ttost_paired(h, b, low=-bound, upp=bound)[0])
    return float(test.pvalue), (float(ci.low), float(ci.high)), p_equivalence


def _ends(ends: Sequence[float], *, lower_is_better: bool,
          relative: bool) -> tuple[float, float]:
    """An interval of the tested difference in improvement units, low end first."""
    low, high = sorted(_improvement(float(end), lower_is_better=lower_is_better,
                                    relative=relative) for end in ends)
    return low, high


def _larger(first: float, second: float) -> float:
    """The larger of two p-values, ignoring an undefined one (``nan``: a t-test of
    differences that are all zero); ``nan`` when both are."""
    return float(np.fmax(first, second))


def _combine(first: tuple[float, float], second: tuple[float, float]) -> tuple[float, float]:
    """The smallest interval holding both (an undefined one, ``nan``, is ignored): it
    excludes a value exactly when both do, as the larger of their p-values rejects it."""
    return float(np.fmin(first[0], second[0])), float(np.fmax(first[1], second[1]))


def _bootstrap_mde(boot: BootstrapDistribution, alpha: float, relative: bool) -> float:
    """The smallest |improvement| a two-sided test at ``alpha`` detects with 80% power when the
    estimate is normal with the bootstrap's standard error."""
    on_scale = (stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(_POWER)) * boot.standard_error
    return math.expm1(on_scale) if relative else float(on_scale)


def interval_at(row: Comparison | pd.Series, tail: float, *, lower_is_better: bool,
                relative: bool) -> tuple[float, float]:
    """The interval of ``row``'s improvement that leaves ``tail`` in each tail (the
    ``1 - 2 tail`` interval), in improvement units: the smallest one holding the paired-t
    interval and the bootstrap's percentile interval at that level, what the one-sided tests
    of TOST at level ``tail`` see. ``nan`` for an exact row or one without spread."""
    sign = {"lower_is_better": lower_is_better, "relative": relative}
    resampled = getattr(row, "resampled", None)
    bootstrap = (_ends(BootstrapDistribution(math.nan, resampled).interval(2 * tail), **sign)
                 if isinstance(resampled, np.ndarray) and 0 < tail < 0.5
                 else (math.nan, math.nan))
    se, df = float(row.standard_error), float(row.df)
    if se == 0:  # differences without spread: every level's t-interval is the point
        point = _improvement(float(row.difference), **sign)
        return _combine((point, point), bootstrap)
    if not (math.isfinite(se) and math.isfinite(df) and df > 0 and 0 < tail < 0.5):
        return math.nan, math.nan
    half = float(stats.t.ppf(1 - tail, df)) * se
    return _combine(_ends([float(row.difference) + s * half for s in (-1, 1)], **sign),
                    bootstrap)


def comparison_row(head: Sequence[float], baseline: Sequence[float], **options: Any) -> dict:
    """``compare_paired`` (with its keyword ``options``) as a plain dict, one row of a
    comparisons frame."""
    return dataclasses.asdict(compare_paired(head, baseline, **options))
