"""gap_study.report.comparisons and .decisions: paired comparisons and verdicts, pinned against
R's published output and against independent computations with scipy's t and noncentral t
distributions."""

import dataclasses
import gc
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gap_study.report.comparisons import (
    Comparison,
    Margin,
    compare_paired,
    comparison_row,
    interval_at,
)
from gap_study.report.decisions import bh_q_values, holm, judge_family, verdict

# R's `sleep` data set (Cushny and Peebles), ten patients each given both drugs.
SLEEP_1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
SLEEP_2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
# t.test(extra ~ group, data = sleep, paired = TRUE): t = -4.0621, df = 9, p-value = 0.002833
R_SLEEP_P, R_SLEEP_CI, R_SLEEP_MEAN = 0.002833, (-2.4598858, -0.7001142), -1.58


def _tost_by_hand(d, margin):
    """The larger one-sided p-value of H0: mean <= -margin and H0: mean >= +margin."""
    d = np.asarray(d, dtype=float)
    n, se = len(d), d.std(ddof=1) / math.sqrt(len(d))
    p_lower = stats.t.sf((d.mean() + margin) / se, n - 1)   # reject mean <= -margin
    p_upper = stats.t.cdf((d.mean() - margin) / se, n - 1)  # reject mean >= +margin
    return max(p_lower, p_upper)


def _power_by_hand(difference, sd, n, alpha=0.05):
    """Power of a two-sided one-sample (paired) t-test, from the noncentral t distribution."""
    crit = stats.t.ppf(1 - alpha / 2, n - 1)
    nc = difference / sd * math.sqrt(n)
    return stats.nct.sf(crit, n - 1, nc) + stats.nct.cdf(-crit, n - 1, nc)


def _made(improvement, exact=False):
    """A hand-made comparison whose p-values come from the verdict's arguments."""
    return Comparison(n=3, head_mean=1.0, baseline_mean=1.0, improvement=improvement,
                      ci_low=improvement, ci_high=improvement, p_difference=math.nan,
                      p_equivalence=math.nan, mde=math.nan, exact=exact)


def test_paired_t_matches_r_on_the_sleep_data_higher_is_better():
    c = compare_paired(SLEEP_1, SLEEP_2, lower_is_better=False, margin=Margin(2.0))
    assert c.n == 10 and not c.exact
    assert c.p_difference == pytest.approx(R_SLEEP_P, abs=1e-6)
    assert c.improvement == pytest.approx(R_SLEEP_MEAN)
    assert (c.ci_low, c.ci_high) == pytest.approx(R_SLEEP_CI, abs=1e-7)
    assert (c.head_mean, c.baseline_mean) == pytest.approx((0.75, 2.33))


def test_lower_is_better_flips_the_improvement_and_reorders_the_interval():
    c = compare_paired(SLEEP_1, SLEEP_2, lower_is_better=True, margin=Margin(2.0))
    assert c.improvement == pytest.approx(-R_SLEEP_MEAN)
    assert (c.ci_low, c.ci_high) == pytest.approx((-R_SLEEP_CI[1], -R_SLEEP_CI[0]), abs=1e-7)
    assert c.p_difference == pytest.approx(R_SLEEP_P, abs=1e-6)
    assert verdict(c, c.p_difference, c.p_equivalence) == "better"


def test_tost_matches_a_hand_computation_and_is_not_equivalent_on_the_sleep_data():
    d = np.subtract(SLEEP_1, SLEEP_2)
    c = compare_paired(SLEEP_1, SLEEP_2, lower_is_better=False, margin=Margin(2.0))
    assert c.p_equivalence_t == pytest.approx(_tost_by_hand(d, 2.0), rel=1e-9)
    assert c.p_equivalence == max(c.p_equivalence_t, c.p_equivalence_bootstrap) > 0.1
    assert verdict(c, math.nan, c.p_equivalence) == "inconclusive"


def test_tost_gives_a_small_p_for_tiny_differences_within_a_large_margin():
    baseline = [0.900, 0.910, 0.905, 0.895, 0.902]
    head = np.add(baseline, [0.001, -0.001, 0.0005, 0.0, -0.0005])
    c = compare_paired(head, baseline, lower_is_better=False, margin=Margin(0.05))
    assert c.p_equivalence_t == pytest.approx(_tost_by_hand(head - baseline, 0.05), rel=1e-9)
    assert c.p_equivalence_t < 1e-6 and c.p_difference > 0.5
    # the bootstrap's smallest p-value is one resample in 10,001, and a row needs both tests
    assert c.p_equivalence == c.p_equivalence_bootstrap == 1 / 10_001
    assert verdict(c, c.p_difference, c.p_equivalence) == "equivalent"


def test_mde_has_80_percent_power_by_the_noncentral_t():
    c = compare_paired(SLEEP_1, SLEEP_2, lower_is_better=False, margin=Margin(2.0))
    sd = np.subtract(SLEEP_1, SLEEP_2).std(ddof=1)
    assert _power_by_hand(c.mde, sd, 10) == pytest.approx(0.80, abs=1e-3)
    strict = compare_paired(SLEEP_1, SLEEP_2, lower_is_better=False, margin=Margin(2.0),
                            alpha_for_mde=0.01)
    assert _power_by_hand(strict.mde, sd, 10, alpha=0.01) == pytest.approx(0.80, abs=1e-3)
    assert strict.mde > c.mde


def test_relative_margin_improvement_is_the_ratio_of_geometric_means_minus_one():
    head, baseline = [0.010, 0.011, 0.009], [0.030, 0.031, 0.029]
    c = compare_paired(head, baseline, lower_is_better=True, margin=Margin(0.10, relative=True))
    logs = np.log(head) - np.log(baseline)
    assert c.improvement == pytest.approx(math.exp(-logs.mean()) - 1, rel=1e-12)
    assert c.improvement == pytest.approx(2.0, abs=0.02)
    ci = stats.ttest_rel(np.log(head), np.log(baseline)).confidence_interval(0.95)
    assert (c.ci_low, c.ci_high) == pytest.approx((math.expm1(-ci.high), math.expm1(-ci.low)))
    assert c.ci_low <= c.improvement <= c.ci_high
    sd = logs.std(ddof=1)
    assert _power_by_hand(math.log1p(c.mde), sd, 3) == pytest.approx(0.80, abs=1e-3)
    assert verdict(c, c.p_difference, c.p_equivalence) == "better"


def test_relative_margin_tost_on_logs_finds_close_ratios_equivalent():
    baseline = np.array([1.00, 1.10, 0.95, 1.05, 1.02])
    head = baseline * [1.01, 0.99, 1.02, 1.00, 0.98]
    c = compare_paired(head, baseline, lower_is_better=True, margin=Margin(0.10, relative=True))
    logs = np.log(head) - np.log(baseline)
    assert c.p_equivalence_t == pytest.approx(_tost_by_hand(logs, math.log(1.10)), rel=1e-9)
    assert c.p_equivalence == max(c.p_equivalence_t, c.p_equivalence_bootstrap) < 0.05
    assert abs(c.improvement) < 0.05
    assert verdict(c, c.p_difference, c.p_equivalence) == "equivalent"


def test_relative_margin_needs_positive_values():
    with pytest.raises(ValueError, match="> 0"):
        compare_paired([1.0, 0.0], [1.0, 2.0], lower_is_better=True,
                       margin=Margin(0.1, relative=True))


def test_parameter_counts_are_exact_with_nan_p_values_even_for_one_pair():
    for n in (3, 1):
        c = compare_paired([650] * n, [1_157_510] * n, lower_is_better=True, margin=Margin(0),
                           exact=True)
        assert c.exact and c.n == n
        assert c.improvement == c.ci_low == c.ci_high == 1_156_860
        assert math.isnan(c.p_difference) and math.isnan(c.p_equivalence) and math.isnan(c.mde)
        assert verdict(c, c.p_difference, c.p_equivalence) == "better"


def test_a_measured_metric_is_never_exact_even_when_seeds_agree():
    # accuracy moves in steps of one image: three seeds can differ by the same step
    c = compare_paired([0.5, 0.6, 0.7], [0.4, 0.5, 0.6], lower_is_better=False,
                       margin=Margin(0.01))
    assert not c.exact and c.improvement == pytest.approx(0.1)
    assert c.p_difference < 0.05 and verdict(c, c.p_difference, c.p_equivalence) == "better"


def test_one_seed_of_a_measured_metric_is_inconclusive_not_exact():
    c = compare_paired([0.9], [0.8], lower_is_better=False, margin=Margin(0.01))
    assert not c.exact and c.n == 1
    assert math.isnan(c.p_difference) and math.isnan(c.ci_low)
    assert verdict(c, c.p_difference, c.p_equivalence) == "inconclusive"


def test_a_metric_declared_exact_that_varies_is_an_error():
    with pytest.raises(ValueError, match="declared exact differs between pairs"):
        compare_paired([650, 651], [1000, 1000], lower_is_better=True, margin=Margin(0),
                       exact=True)


def test_unequal_lengths_and_no_pairs_raise_value_errors_naming_the_lengths():
    with pytest.raises(ValueError, match="3 head values, 2 baseline values"):
        compare_paired([1.0, 2.0, 3.0], [1.0, 2.0], lower_is_better=False, margin=Margin(0.1))
    with pytest.raises(ValueError, match="0 head values"):
        compare_paired([], [], lower_is_better=False, margin=Margin(0.1))


def test_verdict_rules_on_hand_made_comparisons():
    assert verdict(_made(0.02), 0.01, 0.9) == "better"
    assert verdict(_made(-0.02), 0.01, 0.9) == "worse"
    assert verdict(_made(0.001), 0.6, 0.01) == "equivalent"  # not different and equivalent
    assert verdict(_made(0.02), 0.2, 0.3) == "inconclusive"
    # inside the margin is equivalent even where the difference test rejects (protocol 4)
    assert verdict(_made(0.02), 0.01, 0.01) == "equivalent"
    assert verdict(_made(0.02), math.nan, math.nan) == "inconclusive"
    assert verdict(_made(0.02), 0.04, 0.9, alpha=0.01) == "inconclusive"


def test_verdict_of_exact_comparisons_follows_the_sign():
    assert [verdict(_made(x, exact=True), math.nan, math.nan) for x in (5.0, -5.0, 0.0)] \
        == ["better", "worse", "equivalent"]


def test_holm_and_bh_match_r_p_adjust():
    p = [0.01, 0.02, 0.03, 0.04, 0.05]
    np.testing.assert_allclose(holm(p), [0.05, 0.08, 0.09, 0.09, 0.09])
    np.testing.assert_allclose(bh_q_values(p), [0.05] * 5)


def test_holm_and_bh_leave_nan_out_of_the_family():
    # By hand over the four finite values: Holm 4p, 3p, 2p, p with running max; BH 4p/rank
    # with running min from the top.
    p = [np.nan, 0.01, 0.04, np.nan, 0.03, 0.005]
    np.testing.assert_allclose(holm(p), [np.nan, 0.03, 0.06, np.nan, 0.06, 0.02])
    np.testing.assert_allclose(bh_q_values(p), [np.nan, 0.02, 0.04, np.nan, 0.04, 0.02])
    assert np.isnan(holm([np.nan, np.nan])).all() and len(bh_q_values([])) == 0


def test_holm_leaves_the_garbage_collector_as_it_found_it():
    # holm freezes the live objects around statsmodels' gc.collect() and thaws them after; a
    # process that had frozen its own objects keeps them frozen
    assert gc.get_freeze_count() == 0
    holm([0.01, 0.02])
    assert gc.get_freeze_count() == 0
    gc.freeze()
    try:
        np.testing.assert_allclose(holm([0.01, 0.02]), [0.02, 0.02])
        assert gc.get_freeze_count() > 0  # not thawed (the count drops as frozen objects die)
    finally:
        gc.unfreeze()


@pytest.fixture(scope="module")
def family():
    return pd.DataFrame({
        "head": ["gap", "gmp", "sum", "gap"],
        "metric": ["accuracy", "accuracy", "accuracy", "parameters"],
        "p_difference": [0.01, 0.04, 0.03, np.nan],
        "p_equivalence": [0.5, 0.2, 0.001, np.nan],
        "improvement": [0.02, -0.01, 0.001, 1_156_860.0],
        "exact": [False, False, False, True],
        "lower_is_better": [False, False, False, True],
        "relative": False,
        "difference": [0.02, -0.01, 0.001, -1_156_860.0],  # no spread given: no intervals
        "standard_error": np.nan,
        "df": 4.0,
    })


def test_judge_family_holm_adjusts_both_families_and_turns_a_raw_win_inconclusive(family):
    judged = judge_family(family, adjust="holm")
    np.testing.assert_allclose(judged["p_difference_adjusted"], [0.03, 0.06, 0.06, np.nan])
    np.testing.assert_allclose(judged["p_equivalence_adjusted"], [0.5, 0.4, 0.003, np.nan])
    assert judged["verdict"].tolist() == ["better", "inconclusive", "equivalent", "better"]
    assert judged["head"].tolist() == family["head"].tolist()
    assert "verdict" not in family.columns


def test_judge_family_bh_q_values_and_verdicts(family):
    judged = judge_family(family, adjust="bh")
    np.testing.assert_allclose(judged["p_difference_adjusted"], [0.03, 0.04, 0.04, np.nan])
    np.testing.assert_allclose(judged["p_equivalence_adjusted"], [0.5, 0.3, 0.003, np.nan])
    # sum's difference is significant but its interval lies inside the margin: trivial
    assert judged["verdict"].tolist() == ["better", "worse", "equivalent", "better"]
    assert judged["trivial"].tolist() == [False, False, True, False]


def test_a_measured_row_without_p_values_counts_in_its_family_and_never_rejects(family):
    # a comparison the data could not make (or of one pair) is still a test of the family:
    # the others pay for it as if it had been made with p = 1
    untested = pd.concat([family, family.iloc[[0]].assign(
        head="nin", p_difference=np.nan, p_equivalence=np.nan, improvement=np.nan)],
        ignore_index=True)
    for adjust, adjuster in (("holm", holm), ("bh", bh_q_values)):
        judged = judge_family(untested, adjust=adjust)
        np.testing.assert_allclose(judged["p_difference_adjusted"][:3],
                                   adjuster([0.01, 0.04, 0.03, 1.0])[:3])
        np.testing.assert_allclose(judged["p_equivalence_adjusted"][:3],
                                   adjuster([0.5, 0.2, 0.001, 1.0])[:3])
        assert np.isnan(judged["p_difference_adjusted"].iloc[4])
        assert judged["verdict"].iloc[4] == "inconclusive"
    # Holm over four tests: gap's 0.01 becomes 0.04, still better
    assert judge_family(untested, adjust="holm")["verdict"].tolist()[:4] == [
        "better", "inconclusive", "equivalent", "better"]


def test_judge_family_rejects_an_unknown_adjustment(family):
    with pytest.raises(ValueError, match="bonferroni"):
        judge_family(family, adjust="bonferroni")


def test_comparison_rows_build_a_frame_that_judge_family_accepts():
    rows = [comparison_row(SLEEP_1, SLEEP_2, lower_is_better=True, margin=Margin(2.0)),
            comparison_row([650], [1_157_510], lower_is_better=True, margin=Margin(0),
                           exact=True)]
    assert set(rows[0]) == {f.name for f in dataclasses.fields(Comparison)}
    judged = judge_family(pd.DataFrame(rows).assign(lower_is_better=True, relative=False),
                          adjust="holm")
    assert judged["p_difference_adjusted"].iloc[0] == pytest.approx(rows[0]["p_difference"])
    assert judged["verdict"].tolist() == ["better", "better"]


def _judged(differences, *, margin: float, adjust: str = "holm", relative: bool = False,
            seed: int = 0, noise=0.004) -> pd.DataFrame:
    """One family of comparisons: per row, five seeds of a head ``differences[i]`` above a
    baseline, the paired differences with spread ``noise`` (or ``noise[i]``), compared
    higher-is-better within ``margin``."""
    rng = np.random.default_rng(seed)
    rows = []
    for difference, spread in zip(differences, np.broadcast_to(noise, len(differences)),
                                  strict=True):
        baseline = 0.9 + rng.normal(0, 0.01, 5)
        head = baseline + difference + rng.normal(0, spread, 5)
        if relative:
            baseline, head = np.exp(baseline), np.exp(head)
        rows.append(comparison_row(head, baseline, lower_is_better=False,
                                   margin=Margin(margin, relative=relative)))
    frame = pd.DataFrame(rows).assign(lower_is_better=False, relative=relative, margin=margin)
    return judge_family(frame, adjust=adjust)


def test_each_outcome_of_the_decision_rule_on_hand_made_families():
    # the last row is noisy: its interval spans zero and reaches beyond the margin
    judged = _judged([0.003, 0.0, 0.05, -0.05, 0.0], margin=0.01,
                     noise=[0.001, 0.001, 0.004, 0.004, 0.02])
    assert judged["verdict"].tolist() == ["equivalent", "equivalent", "better", "worse",
                                          "inconclusive"]
    # a real difference smaller than the margin is equivalent, and marked trivial
    assert judged["trivial"].tolist() == [True, False, False, False, False]
    assert judged.loc[0, "adjusted_low"] > 0 and judged.loc[1, "adjusted_low"] < 0
    # better and worse: the adjusted interval reaches beyond the margin and excludes zero
    assert judged.loc[2, "adjusted_high"] > 0.01 and judged.loc[2, "adjusted_low"] > 0
    assert judged.loc[3, "adjusted_low"] < -0.01 and judged.loc[3, "adjusted_high"] < 0


@pytest.mark.parametrize("adjust", ["holm", "bh"])
@pytest.mark.parametrize("relative", [False, True])
def test_the_adjusted_interval_lies_inside_the_margin_exactly_when_a_row_is_equivalent(
        adjust, relative):
    margin = 0.01
    inside_margin = (1 / (1 + margin) - 1, margin) if relative else (-margin, margin)
    for seed in range(8):
        differences = np.random.default_rng(100 + seed).uniform(-0.03, 0.03, 6)
        judged = _judged(differences, margin=margin, adjust=adjust, relative=relative,
                         seed=seed)
        inside = ((judged.adjusted_low > inside_margin[0])
                  & (judged.adjusted_high < inside_margin[1]))
        assert (inside == (judged.verdict == "equivalent")).all(), judged
        # adjusting only ever widens the interval beyond the unadjusted 1 - 2 alpha one
        for row in judged.itertuples():
            low, high = interval_at(row, 0.05, lower_is_better=False, relative=relative)
            assert row.adjusted_low <= low + 1e-12 and row.adjusted_high >= high - 1e-12



@pytest.mark.parametrize("adjust", ["holm", "bh"])
def test_the_difference_interval_excludes_zero_exactly_when_the_difference_test_rejects(adjust):
    for seed in range(8):
        differences = np.random.default_rng(200 + seed).uniform(-0.03, 0.03, 6)
        judged = _judged(differences, margin=0.01, adjust=adjust, seed=seed)
        excludes = (judged.difference_low > 0) | (judged.difference_high < 0)
        assert (excludes == (judged.p_difference_adjusted < 0.05)).all(), judged
        decided = judged.verdict.isin(["better", "worse"])
        # better or worse: not equivalent, and the difference interval excludes zero
        assert (decided == (excludes & (judged.verdict != "equivalent"))).all()
        # the difference interval (1 - alpha') is the wider when the levels agree
        same = np.isclose(judged.p_difference / judged.p_difference_adjusted,
                          judged.p_equivalence / judged.p_equivalence_adjusted)
        assert (judged.difference_low[same] <= judged.adjusted_low[same]).all()


def test_a_row_needs_both_the_t_test_and_the_bootstrap_and_shows_the_interval_holding_both():
    c = compare_paired(SLEEP_1, SLEEP_2, lower_is_better=False, margin=Margin(2.0))
    assert c.sources == "seeds"  # no per-image values: the pairs alone are resampled
    assert c.p_difference == max(c.p_difference_t, c.p_difference_bootstrap)
    assert c.p_equivalence == max(c.p_equivalence_t, c.p_equivalence_bootstrap)
    assert (c.ci_low, c.ci_high) == (min(c.t_low, c.bootstrap_low),
                                     max(c.t_high, c.bootstrap_high))
    # ten pairs: the percentile bootstrap of ten means is narrower than the t-interval
    assert (c.t_low, c.t_high) == pytest.approx(R_SLEEP_CI, abs=1e-7)
    assert c.bootstrap_high - c.bootstrap_low < c.t_high - c.t_low


def test_the_bootstrap_interval_is_the_percentile_interval_at_the_confidence_level():
    from gap_study.report.bootstrap import one_stage

    c = compare_paired(SLEEP_2, SLEEP_1, lower_is_better=False, margin=Margin(2.0),
                       confidence=0.95, resamples=2000, seed=3)
    # head minus baseline, resampled over the ten pairs with the same draws
    expected = one_stage(np.asarray(SLEEP_1), np.asarray(SLEEP_2), resamples=2000,
                         seed=3).interval(0.05)
    assert (c.bootstrap_low, c.bootstrap_high) == pytest.approx(expected, abs=1e-12)


def test_a_trivial_difference_is_one_the_adjusted_difference_test_rejects():
    # an equivalent row whose raw difference p (0.03) passes alpha but whose Holm-adjusted
    # one (0.09 in a family of three) does not: a difference the family cannot claim
    family = pd.DataFrame({
        "p_difference": [0.03, 0.6, 0.7], "p_equivalence": [0.001, 0.5, 0.5],
        "improvement": [0.002, 0.0, 0.0], "exact": False, "lower_is_better": False,
        "relative": False, "difference": [0.002, 0.0, 0.0], "standard_error": np.nan,
        "df": 4.0})
    judged = judge_family(family, adjust="holm")
    assert judged.loc[0, "verdict"] == "equivalent"
    assert judged.loc[0, "p_difference_adjusted"] == pytest.approx(0.09)
    assert not judged.loc[0, "trivial"]
    assert judge_family(family.assign(p_difference=[0.01, 0.6, 0.7]),
                        adjust="holm").loc[0, "trivial"]  # 0.03 adjusted: trivial


def test_a_p_value_at_alpha_does_not_reject():
    c = compare_paired(SLEEP_2, SLEEP_1, lower_is_better=False, margin=Margin(2.0))
    assert verdict(c, p_difference=0.9, p_equivalence=0.05) == "inconclusive"
    assert verdict(c, p_difference=0.05, p_equivalence=0.9) == "inconclusive"
    assert verdict(c, p_difference=0.9, p_equivalence=0.0499) == "equivalent"
