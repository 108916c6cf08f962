"""The paired bootstrap of protocol version 4 on synthetic tables with known variance components.

A table is ``delta + s * seed effect + u * image effect + e * seed x image noise``, each effect
standard normal: the difference ``b - a`` of two heads on 5 seeds x 100 images, whose true mean
difference is ``delta``. With ``TABLES`` simulated tables a coverage of 95% has a binomial
standard deviation of sqrt(0.95 * 0.05 / 200) = 0.0154; the tolerance is three of them.
"""

import math
from functools import cache

import numpy as np
import pytest
from scipy import stats

from gap_study.report.bootstrap import BootstrapDistribution, one_stage, two_stage

SEEDS, IMAGES, RESAMPLES, TABLES = 5, 100, 1000, 200
TOLERANCE = 3 * math.sqrt(0.95 * 0.05 / TABLES)


def _table(rng, s, u, e, delta=0.0, seeds=SEEDS, images=IMAGES):
    return (delta + s * rng.normal(size=(seeds, 1)) + u * rng.normal(size=(1, images))
            + e * rng.normal(size=(seeds, images)))


@cache
def _simulate(s, u, e, delta=0.0, margin=0.5):
    """For ``TABLES`` tables with these components: whether the 95% bootstrap interval and the
    95% t-interval over the seeds' means hold ``delta``, their widths, and the bootstrap's
    p-values for no difference (``p``) and for equivalence within ``margin`` (``tost``)."""
    rng = np.random.default_rng(12345)
    rows = []
    for k in range(TABLES):
        difference = _table(rng, s, u, e, delta)
        result = two_stage(np.zeros_like(difference), difference, resamples=RESAMPLES, seed=k)
        low, high = result.interval(0.05)
        means = difference.mean(axis=1)
        half = stats.t.ppf(0.975, SEEDS - 1) * means.std(ddof=1) / math.sqrt(SEEDS)
        rows.append((low <= delta <= high, high - low, abs(means.mean() - delta) <= half,
                     2 * half, result.p_value(), result.tost_p_value(margin)))
    covered, width, t_covered, t_width, p, tost = map(np.array, zip(*rows, strict=True))
    return {"coverage": covered.mean(), "width": np.median(width),
            "t_coverage": t_covered.mean(), "t_width": np.median(t_width), "p": p,
            "tost": tost}


# images dominate, as on digits: the seeds' effect small, each image's effect shared by all seeds
IMAGES_DOMINATE = (0.05, 1.0, 0.5)


def test_the_95_percent_interval_covers_the_true_difference_95_percent_of_the_time():
    assert _simulate(*IMAGES_DOMINATE)["coverage"] == pytest.approx(0.95, abs=TOLERANCE)
    # a table shifted by 0.3 gives the same resamples shifted by 0.3: the same coverage
    difference = _table(np.random.default_rng(5), *IMAGES_DOMINATE)
    zeros = np.zeros_like(difference)
    np.testing.assert_allclose(two_stage(zeros, difference + 0.3).resampled,
                               two_stage(zeros, difference).resampled + 0.3, atol=1e-12)


def test_when_images_vary_and_seeds_do_not_the_interval_widens_where_the_t_interval_cannot():
    images_only = _simulate(0.0, 1.0, 0.2)
    # the seeds' means differ only by the small noise: the t-interval sees none of the images'
    assert images_only["t_coverage"] < 0.6 < 0.95 - TOLERANCE
    assert images_only["coverage"] == pytest.approx(0.95, abs=TOLERANCE)
    assert images_only["width"] > 3 * images_only["t_width"]


def test_the_seed_by_image_interaction_alone_gives_a_conservative_interval():
    # resampling seeds and images independently counts the interaction up to three times
    interaction = _simulate(0.0, 0.0, 1.0)
    assert interaction["coverage"] >= 0.97
    exact = 2 * stats.norm.ppf(0.975) / math.sqrt(SEEDS * IMAGES)  # known standard error
    assert interaction["width"] > 1.3 * exact  # sqrt(3) = 1.7 times, less the finite sizes


def test_with_five_seeds_dominating_the_percentile_interval_is_too_narrow_the_t_one_is_not():
    # the documented limit: 5 resampled seed means spread 4/5 as much, with normal quantiles
    seeds = _simulate(1.0, 0.1, 0.1)
    assert seeds["coverage"] < 0.95 - TOLERANCE
    assert seeds["t_coverage"] == pytest.approx(0.95, abs=TOLERANCE)


def test_p_values_under_no_difference_are_roughly_uniform():
    p = _simulate(*IMAGES_DOMINATE)["p"]
    assert np.mean(p < 0.05) == pytest.approx(0.05, abs=TOLERANCE)
    assert np.mean(p < 0.5) == pytest.approx(0.5, abs=3 * math.sqrt(0.25 / TABLES))
    assert np.histogram(p, bins=5, range=(0, 1))[0].min() > TABLES / 5 / 2


def test_a_large_difference_gets_the_smallest_p_value_the_resamples_can_show():
    difference = _table(np.random.default_rng(0), *IMAGES_DOMINATE, delta=1.0)
    result = two_stage(np.zeros_like(difference), difference, resamples=RESAMPLES)
    assert result.p_value() == 2 / (RESAMPLES + 1)


def test_equivalence_is_rejected_at_the_margins_edge_about_alpha_of_the_time():
    # tost: H0 "the difference is at least the margin" holds with equality here
    at_edge = _simulate(*IMAGES_DOMINATE, delta=0.2, margin=0.2)["tost"]
    assert np.mean(at_edge < 0.05) <= 0.05 + TOLERANCE
    inside = _simulate(*IMAGES_DOMINATE)["tost"]  # no difference, margin 0.5: 5 standard errors
    assert np.mean(inside < 0.05) > 0.95


def test_p_values_count_the_resamples_beyond_zero_and_the_margins_plus_one():
    result = BootstrapDistribution(0.3, np.arange(-2.0, 8.0))  # -2, -1, ..., 7: B = 10
    assert result.p_value() == 2 * (3 + 1) / 11  # -2, -1, 0 at or below zero
    assert result.tost_p_value(5.0) == (3 + 1) / 11  # 5, 6, 7 at or above the margin
    assert result.tost_p_value(1.5) == (6 + 1) / 11  # 2, ..., 7
    assert result.interval(0.2) == pytest.approx((-2 + 0.9, 7 - 0.9))  # numpy's linear quantile
    with pytest.raises(ValueError, match="margin must be positive"):
        result.tost_p_value(0.0)


def test_each_resample_draws_seeds_then_the_same_images_for_every_drawn_seed():
    rng = np.random.default_rng(3)
    a, b = rng.normal(size=(4, 7)), rng.normal(size=(4, 7))
    result = two_stage(a, b, resamples=50, seed=9)
    draws = np.random.default_rng(9)  # the draws two_stage makes, one chunk of 50
    seeds, images = draws.integers(0, 4, (50, 4)), draws.integers(0, 7, (50, 7))
    by_hand = [(b - a)[np.ix_(s, i)].mean() for s, i in zip(seeds, images, strict=True)]
    np.testing.assert_allclose(result.resampled, by_hand, rtol=1e-12)
    assert result.estimate == pytest.approx((b - a).mean())


def test_the_same_seed_gives_the_same_distribution_and_another_seed_another():
    difference = _table(np.random.default_rng(1), *IMAGES_DOMINATE)
    zeros = np.zeros_like(difference)
    first, again = two_stage(zeros, difference, seed=4), two_stage(zeros, difference, seed=4)
    np.testing.assert_array_equal(first.resampled, again.resampled)
    assert not np.array_equal(first.resampled, two_stage(zeros, difference, seed=5).resampled)
    seeds_a = one_stage(zeros.mean(axis=1), difference.mean(axis=1), seed=4)
    seeds_b = one_stage(zeros.mean(axis=1), difference.mean(axis=1), seed=4)
    np.testing.assert_array_equal(seeds_a.resampled, seeds_b.resampled)


def test_pairing_cancels_an_image_effect_both_heads_share():
    rng = np.random.default_rng(2)
    hard = 10 * rng.normal(size=(1, IMAGES))  # images both heads find hard or easy
    a = hard + rng.normal(size=(SEEDS, IMAGES)) * 0.1
    b = a + 0.5 + rng.normal(size=(SEEDS, IMAGES)) * 0.1
    paired = two_stage(a, b)
    low, high = paired.interval()
    assert low < 0.5 < high and high - low < 0.1
    # each head's images drawn apart: the shared effect no longer cancels
    apart = two_stage(np.zeros_like(b), b, seed=1).resampled \
        - two_stage(np.zeros_like(a), a, seed=2).resampled
    assert np.diff(np.quantile(apart, [0.025, 0.975]))[0] > 20 * (high - low)


def test_the_one_stage_variant_resamples_the_replicates_alone():
    result = one_stage(np.array([0.0, 0.0]), np.array([0.0, 1.0]), resamples=200)
    assert set(np.unique(result.resampled)) <= {0.0, 0.5, 1.0} and result.estimate == 0.5
    # on many normal replicates it agrees with the t-interval
    rounds = np.random.default_rng(0).normal(1.0, 2.0, size=60)
    low, high = one_stage(np.zeros(60), rounds).interval()
    t_low, t_high = stats.t.interval(0.95, 59, rounds.mean(), stats.sem(rounds))
    assert low == pytest.approx(t_low, abs=0.1) and high == pytest.approx(t_high, abs=0.1)


def test_unpaired_shapes_few_replicates_and_missing_values_are_refused():
    with pytest.raises(ValueError, match="one shape"):
        two_stage(np.zeros((5, 10)), np.zeros((5, 11)))
    with pytest.raises(ValueError, match="one shape"):
        one_stage(np.zeros((5, 10)), np.zeros((5, 10)))
    with pytest.raises(ValueError, match="at least two replicates"):
        two_stage(np.zeros((1, 10)), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="finite"):
        two_stage(np.zeros((5, 10)), np.full((5, 10), np.nan))


def test_a_weighted_metric_resamples_each_seeds_ratio_over_the_same_drawn_images():
    rng = np.random.default_rng(4)
    a, b = rng.random((3, 9)), rng.random((3, 9))
    a_weights = (rng.random((3, 9)) < 0.6).astype(float)
    a_weights[:, 0] = 1  # every seed has a weighted image
    b_weights = np.ones((3, 9))
    result = two_stage(a, b, a_weights=a_weights, b_weights=b_weights, resamples=40, seed=2)
    draws = np.random.default_rng(2)
    seeds, images = draws.integers(0, 3, (40, 3)), draws.integers(0, 9, (40, 9))

    def ratio(x, w, s, i):  # each drawn seed's weighted mean over the drawn images
        return [np.sum(x[k, i] * w[k, i]) / np.sum(w[k, i]) for k in s]

    by_hand = []
    for s, i in zip(seeds, images, strict=True):
        with np.errstate(invalid="ignore"):
            by_hand.append(np.mean(np.subtract(ratio(b, b_weights, s, i),
                                               ratio(a, a_weights, s, i))))
    assert np.isfinite(by_hand).all()
    np.testing.assert_allclose(result.resampled, by_hand, rtol=1e-12)
    per_seed = (b * b_weights).sum(1) / b_weights.sum(1) - (a * a_weights).sum(1) / a_weights.sum(1)
    assert result.estimate == pytest.approx(per_seed.mean())
    # weights of one are the plain mean
    ones = two_stage(a, b, a_weights=np.ones((3, 9)), b_weights=b_weights, resamples=40, seed=2)
    np.testing.assert_allclose(ones.resampled, two_stage(a, b, resamples=40, seed=2).resampled,
                               rtol=1e-12)


def test_weights_on_one_side_only_or_a_seed_without_weight_are_refused():
    values = np.ones((3, 4))
    with pytest.raises(ValueError, match="both heads or for neither"):
        two_stage(values, values, a_weights=values)
    empty = np.ones((3, 4))
    empty[1] = 0
    with pytest.raises(ValueError, match="every seed needs a positive weight"):
        two_stage(values, values, a_weights=empty, b_weights=values)


def test_a_metric_of_whole_numbers_gives_exact_sums_in_any_order():
    # correct-or-not values and integer counts: each resample's sum is an integer below 2**53,
    # so the matrix product's order (another CPU's kernels) cannot change a single bit
    rng = np.random.default_rng(0)
    a, b = rng.random((5, 450)) < 0.98, rng.random((5, 450)) < 0.99
    result = two_stage(a, b, resamples=2_000)
    # every value is a whole number divided once by 5 x 450, correctly rounded
    whole = np.round(result.resampled * (5 * 450))
    np.testing.assert_array_equal(result.resampled, whole / (5 * 450))
