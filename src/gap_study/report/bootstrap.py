"""Paired bootstrap intervals and tests for one comparison of two heads (since protocol version 4,
``docs/study.md``, "Statistics and verdicts"). NumPy and SciPy only: no torch, no plotting.

The unit of analysis is (seed, test image). For a metric with a value per test image, ``a`` and
``b`` are ``(seeds, images)`` tables of the two heads on the same images: row ``s`` of both is
seed ``s``, column ``i`` of both is test image ``i``. ``two_stage`` resamples the seeds with
replacement, then the images with replacement, and the mean difference ``b - a`` of each
resample makes the bootstrap distribution. Three choices, and why:

1. The same resampled images serve both heads, so the pairing by image survives: an image that
   both heads get wrong cancels in ``b - a`` in every resample.
2. The same resampled images also serve every resampled seed. Seeds and images are crossed
   factors (every seed's model is scored on every image), not nested ones, so the images'
   own effect on the difference is shared by all seeds. Drawing images afresh for each seed
   (the two-stage bootstrap for nested, hierarchical data; Davison & Hinkley 1997) would
   average that shared effect over the seeds as if it were independent noise and shrink its
   variance about ``seeds`` times. Resampling rows and columns independently is the
   bootstrap for crossed designs (Owen 2007, "The pigeonhole bootstrap", Annals of Applied
   Statistics 1(2); no bootstrap is exact there: McCullagh 2000, Bernoulli 6). It gets the
   seed and image main effects right and counts their interaction up to three times over:
   mildly conservative.
3. Percentile intervals and p-values that invert them (``BootstrapDistribution``): a row's
   decision can never disagree with the interval printed beside it. Bootstrap-t would need a
   standard error within every resample, and with 5 seeds that estimate is itself too noisy
   to studentize by.

With few seeds and the seeds' variance dominating, any percentile bootstrap over seeds is too
narrow (the resampled spread of 5 seed means is 4/5 of their variance, and normal quantiles
replace t quantiles with 4 degrees of freedom); the t-interval over seeds stays beside it in
the report. Where test images dominate, as on digits (3.5x the seeds' standard error), the
two-stage interval keeps its nominal coverage (``tests/test_report_bootstrap.py``).

``one_stage`` is the variant for metrics without per-image values (step time, time to target):
it resamples the replicates (seeds or timing rounds) of the paired differences with
``scipy.stats.bootstrap``. Whatever is fixed across those replicates is not in its interval:
the test or validation images, the data split and the machine (its CPU, threads and load).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

__all__ = ["DEFAULT_RESAMPLES", "BootstrapDistribution", "one_stage", "two_stage"]

# 10,000 resamples: an empirical 2.5% quantile then sits within sqrt(0.025 * 0.975 / B) =
# 0.16 percentage points of the distribution's own (one Monte Carlo sd), which for a
# near-normal distribution is 0.0016 / phi(1.96) = 0.027 of its standard error; a p-value of
# 0.05 has a Monte Carlo sd of 0.0022, one of 0.003 (Holm's first level in a family of 16)
# 0.00055
DEFAULT_RESAMPLES = 10_000
# Resamples drawn at a time, which keeps memory at _CHUNK x images counts. Part of the draws'
# definition (docs/study.md, "How many resamples"): each block takes its seeds' and then
# its images' draws from the one generator, so another size gives other resamples.
_CHUNK = 1_000


@dataclass(frozen=True)
class BootstrapDistribution:
    """The bootstrap distribution of the mean difference ``b - a``: ``estimate`` on the data,
    ``resampled`` (``float64 (B,)``) one value per resample. ``b`` is the tested head, so a
    positive difference means a higher value of the metric for it."""

    estimate: float
    resampled: np.ndarray

    @property
    def standard_error(self) -> float:
        """The resampled values' standard deviation."""
        return float(self.resampled.std(ddof=1))

    def interval(self, alpha: float = 0.05) -> tuple[float, float]:
        """The percentile interval at level ``1 - alpha``: the ``alpha / 2`` and
        ``1 - alpha / 2`` quantiles of the resampled differences."""
        low, high = np.quantile(self.resampled, [alpha / 2, 1 - alpha / 2])
        return float(low), float(high)

    def p_value(self) -> float:
        """Two-sided p-value for "no difference": twice the smaller share of resamples at or
        beyond zero on either side, each count plus one over ``B + 1`` (a finite number of
        resamples cannot show a probability below ``1 / (B + 1)``, and 0 would pass every
        Holm level). It rejects at ``alpha`` when the ``1 - alpha`` percentile interval
        excludes 0, up to that one resample."""
        below, above = self._tail(0.0)
        return min(1.0, 2 * min(below, above))

    def tost_p_value(self, margin: float) -> float:
        """Equivalence within ``(-margin, margin)`` (two one-sided tests, Lakens 2017): the
        larger of the p-values for "the difference is at most ``-margin``" (resamples at or
        below ``-margin``) and "at least ``margin``" (at or above it). It rejects at
        ``alpha`` when the ``1 - 2 alpha`` percentile interval lies inside the margin."""
        if margin <= 0:
            raise ValueError(f"the margin must be positive, got {margin}")
        lower, _ = self._tail(-margin)
        _, upper = self._tail(margin)
        return max(lower, upper)

    def _tail(self, value: float) -> tuple[float, float]:
        """The shares (count + 1 over B + 1) of resamples at or below and at or above
        ``value``."""
        b = len(self.resampled)
        below = int(np.count_nonzero(self.resampled <= value))
        above = int(np.count_nonzero(self.resampled >= value))
        return (below + 1) / (b + 1), (above + 1) / (b + 1)


def _paired(a: np.ndarray, b: np.ndarray, dims: int) -> np.ndarray:
    """``b - a`` as float64, checked: equal shapes of ``dims`` dimensions, at least two
    replicates, every value finite."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != dims:
        raise ValueError(f"a and b must have one shape of {dims} dimensions (paired values), "
                         f"got {a.shape} and {b.shape}")
    if a.shape[0] < 2 or a.size == 0:
        raise ValueError(f"at least two replicates and one value each are needed, got {a.shape}")
    if not (np.isfinite(a).all() and np.isfinite(b).all()):
        raise ValueError("a and b must be finite: drop the metric where a head has no value")
    return b - a


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """How often each of ``size`` indices was drawn in each row of ``draws`` ``(R, k)``:
    ``(R, size)`` counts by one ``bincount`` over row-offset indices."""
    rows = len(draws)
    offset = (np.arange(rows) * size)[:, None]
    return np.bincount((draws + offset).ravel(), minlength=rows * size).reshape(rows, size)


def two_stage(a: np.ndarray, b: np.ndarray, *, a_weights: np.ndarray | None = None,
              b_weights: np.ndarray | None = None, resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0) -> BootstrapDistribution:
    """The paired two-stage bootstrap of the mean difference ``b - a`` for ``(seeds, images)``
    tables on the same images: each resample draws the seeds with replacement, then the
    images with replacement, the same images for both heads and every drawn seed. Draws come
    from ``numpy.random.default_rng(seed)``, so equal inputs give equal distributions.

    ``a_weights``, ``b_weights`` (``(seeds, images)``, >= 0, both or neither): each head's
    metric for a seed is then the weighted mean ``sum(w x) / sum(w)`` over the drawn images,
    a ratio (pointing on the objects a head recognises: weight 1 for those, 0 for the rest).

    A resample's mean is ``w @ D @ v / (S N)`` with ``w``, ``v`` how often each seed and each
    image was drawn: no table is ever copied, and 10,000 resamples of 5 x 450 take a fraction
    of a second. Counts are integers, so on a metric of integers (correct or not) every sum
    is exact and the distribution is the same on every CPU."""
    if (a_weights is None) != (b_weights is None):
        raise ValueError("give weights for both heads or for neither")
    difference = _paired(a, b, dims=2)
    seeds, units = difference.shape
    if a_weights is not None:
        ratio = _Ratio(a, b, a_weights, b_weights)
    rng = np.random.default_rng(seed)
    resampled = np.empty(resamples)
    for start in range(0, resamples, _CHUNK):
        count = min(_CHUNK, resamples - start)
        seed_weights = _counts(rng.integers(0, seeds, (count, seeds)), seeds)
        unit_weights = _counts(rng.integers(0, units, (count, units)), units)
        if a_weights is None:  # (count, seeds): each seed's resampled sum, divided below
            per_seed = unit_weights @ difference.T
        else:  # (count, seeds): each seed's resampled difference of weighted means
            per_seed = ratio.per_seed(unit_weights)
        resampled[start:start + count] = (seed_weights * per_seed).sum(axis=1)
    if a_weights is None:
        return BootstrapDistribution(float(difference.mean()), resampled / (seeds * units))
    return BootstrapDistribution(float(ratio.per_seed(np.ones((1, units))).mean()),
                                 resampled / seeds)


class _Ratio:
    """Each seed's weighted mean ``sum(w x) / sum(w)`` of both heads over resampled images,
    and its difference ``b - a``."""

    def __init__(self, a: np.ndarray, b: np.ndarray, a_weights: np.ndarray,
                 b_weights: np.ndarray) -> None:
        a_weights, b_weights = (np.asarray(w, dtype=np.float64) for w in (a_weights, b_weights))
        if a_weights.shape != np.shape(a) or b_weights.shape != np.shape(b):
            raise ValueError(f"weights must have the values' shape {np.shape(a)}, got "
                             f"{a_weights.shape} and {b_weights.shape}")
        if not all(np.isfinite(w).all() and (w >= 0).all() for w in (a_weights, b_weights)):
            raise ValueError("weights must be finite and >= 0")
        if (a_weights.sum(axis=1) == 0).any() or (b_weights.sum(axis=1) == 0).any():
            raise ValueError("every seed needs a positive weight on each side: a head's "
                             "metric is not defined for a seed with no weighted image")
        self.sums = [(w * np.asarray(x, dtype=np.float64)).T for x, w in
                     ((a, a_weights), (b, b_weights))]
        self.totals = [a_weights.T, b_weights.T]

    def per_seed(self, unit_weights: np.ndarray) -> np.ndarray:
        """``(count, seeds)`` differences for ``(count, images)`` image counts."""
        with np.errstate(invalid="ignore", divide="ignore"):
            a, b = ((unit_weights @ s) / (unit_weights @ t)
                    for s, t in zip(self.sums, self.totals, strict=True))
        difference = b - a
        if not np.isfinite(difference).all():
            raise ValueError("a resample drew no weighted image for some seed: too few "
                             "weighted images (recognised objects) to bootstrap this metric")
        return difference


def one_stage(a: np.ndarray, b: np.ndarray, *, resamples: int = DEFAULT_RESAMPLES,
              seed: int = 0) -> BootstrapDistribution:
    """The paired bootstrap of the mean difference ``b - a`` over replicates alone (``a``,
    ``b``: one value per seed or timing round, paired by position), for metrics without
    per-image values: ``scipy.stats.bootstrap`` resamples the differences, with draws from
    ``numpy.random.default_rng(seed)``. Its interval leaves out every source of variation
    that is the same in all replicates (the images scored, the data split, the machine)."""
    difference = _paired(a, b, dims=1)
    result = stats.bootstrap((difference,), np.mean, n_resamples=resamples, vectorized=True,
                             method="percentile", rng=np.random.default_rng(seed))
    return BootstrapDistribution(float(difference.mean()),
                                 np.asarray(result.bootstrap_distribution, dtype=np.float64))
