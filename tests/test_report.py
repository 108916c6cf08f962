import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gap_study import report as rp


def test_t_interval_matches_scipy_and_needs_two_values():
    values = [0.91, 0.95, 0.93, 0.97]
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert rp.t_interval(values, 0.95) == pytest.approx(expected)
    low, high = rp.t_interval([0.5], 0.95)
    assert math.isnan(low) and math.isnan(high)


def test_welch_interval_matches_scipy_ttest_ind():
    a, b = [1.0, 1.4, 1.2, 1.9], [0.2, 0.3, 0.9]
    diff, low, high = rp.welch_interval(a, b, 0.9)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((ci.low, ci.high))


def test_welch_interval_is_exact_without_spread_and_nan_with_one_value():
    assert rp.welch_interval([650, 650, 650], [2e6, 2e6, 2e6]) == (650 - 2e6,) * 3
    diff, low, _ = rp.welch_interval([1.0], [0.0, 1.0])
    assert diff == 0.5 and math.isnan(low)


def test_summarize_gives_one_row_per_group_and_metric():
    frame = pd.DataFrame({"head": ["a", "a", "b", "b"], "x": [1.0, 3.0, 5.0, 5.0],
                          "y": [0.0, 0.0, 1.0, 2.0]})
    table = rp.summarize(frame, "head", ["x", "y"])
    assert table[["head", "metric"]].values.tolist() == [["a", "x"], ["a", "y"],
                                                         ["b", "x"], ["b", "y"]]
    row = table[(table["head"] == "a") & (table.metric == "x")].iloc[0]
    assert (row["n"], row["mean"], row["std"]) == (2, 2.0, pytest.approx(math.sqrt(2)))
    assert (row.ci_low, row.ci_high) == pytest.approx(rp.t_interval([1.0, 3.0]))


def _per_seed(gap_overfit, dense_overfit, gap_shift, dense_shift):
    rows = []
    for head, overfit, shifted, params, seconds in [
            ("dense", dense_overfit, dense_shift, 1000, [0.3, 0.31, 0.29]),
            ("gap", gap_overfit, gap_shift, 10, [0.1, 0.11, 0.09])]:
        for seed in range(3):
            rows.append({"head": head, "seed": seed, "params_head": params,
                         "overfit_gap": overfit[seed], "shift_accuracy_mean": shifted[seed],
                         "seconds_per_epoch": seconds[seed]})
    return pd.DataFrame(rows)


def test_claim_verdicts_follow_the_interval_of_the_improvement():
    per_seed = _per_seed(gap_overfit=[0.05, 0.06, 0.04], dense_overfit=[0.01, 0.02, 0.03],
                         gap_shift=[0.8, 0.9, 0.85], dense_shift=[0.8, 0.95, 0.7])
    claims = rp.claim_table(per_seed).set_index("claim")
    assert claims.loc["fewer parameters", "verdict"] == "supported"
    assert claims.loc["fewer parameters", "improvement"] == 990
    assert claims.loc["less overfitting", "verdict"] == "contradicted"  # gap overfits more
    assert claims.loc["more translation robust", "verdict"] == "no clear difference"
    assert claims.loc["faster training", "verdict"] == "supported"
    overall = rp.overall_verdicts(rp.claim_table(per_seed)).set_index("claim").verdict
    assert overall.to_dict() == {"fewer parameters": "supported",
                                 "less overfitting": "contradicted",
                                 "more translation robust": "not supported",
                                 "faster training": "supported"}


def test_a_claim_holding_for_some_heads_only_is_mixed():
    per_seed = _per_seed([0.0] * 3, [0.0] * 3, [0.9, 0.91, 0.92], [0.1, 0.12, 0.11])
    gmp = per_seed[per_seed["head"] == "gap"].assign(head="gmp", shift_accuracy_mean=0.1)
    claims = rp.claim_table(pd.concat([per_seed, gmp]))
    overall = rp.overall_verdicts(claims).set_index("claim")
    assert overall.loc["more translation robust", "verdict"] == "mixed"
    assert overall.loc["more translation robust", "heads supporting"] == "gap"


def test_format_stat_shows_mean_std_and_interval_in_display_units():
    row = {"mean": 0.9731, "std": 0.004, "ci_low": 0.963, "ci_high": 0.983}
    assert rp.format_stat(row, "test_accuracy") == "97.3 ± 0.4 [96.3, 98.3]%"
    exact = {"mean": 650.0, "std": 0.0, "ci_low": 650.0, "ci_high": 650.0}
    assert rp.format_stat(exact, "params_head") == "650"


def test_headline_metrics_are_means_of_the_main_runs_plus_curve_and_ablation():
    main = {"head": ["gap", "gap"], "fraction": [1.0, 1.0], "train_shift": [0, 0],
            "seed": [0, 1], **{m: [1.0, 2.0] for m in rp.HEADLINE_METRICS},
            "params_total": [700, 700], "params_head": [650, 650],
            "seconds_per_epoch": [0.1, 0.2]}
    small = {**main, "fraction": [0.5, 0.5], "overfit_gap": [0.3, 0.5]}
    shifted = {**main, "train_shift": [4, 4], "consistency": [0.9, 0.7]}
    results = pd.concat([pd.DataFrame(part) for part in (main, small, shifted)])
    metrics = rp.headline_metrics(results)
    main_means = {m: 1.5 for m in rp.HEADLINE_METRICS}
    assert metrics == {"gap": {
        **main_means, "params_total": 700, "params_head": 650, "seeds": 2,
        "overfit_gap_by_fraction": {"0.5": 0.4, "1": 1.5},
        "by_train_shift": {
            "0": {"shift_accuracy_mean": 1.5, "consistency": 1.5, "flip_rate": 1.5},
            "4": {"shift_accuracy_mean": 1.5, "consistency": 0.8, "flip_rate": 1.5}}}}
    assert isinstance(metrics["gap"]["params_head"], int)


def test_html_report_is_one_file_with_images_embedded(tmp_path):
    (tmp_path / "figures").mkdir()
    png = b"\x89PNG\r\n\x1a\n" + b"0" * 16
    (tmp_path / "figures" / "a.png").write_bytes(png)
    text = "# Title here\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n![A figure](figures/a.png)\n"
    html = rp.markdown_to_html(text, tmp_path)
    assert "<title>Title here</title>" in html and "<table>" in html
    assert 'src="data:image/png;base64,' in html
    assert not re.search(r'src="(?!data:)', html)  # nothing loaded from elsewhere


def test_cam_claim_is_judged_on_shifted_images_against_the_centre_prior_without_dense():
    per_seed = pd.DataFrame({
        "head": ["dense"] * 3 + ["gap"] * 3 + ["gmp"] * 3, "seed": [0, 1, 2] * 3,
        "pointing_accuracy": [math.nan] * 3 + [1.0] * 6,  # centred: no evidence either way
        "pointing_accuracy_shifted": [math.nan] * 3 + [0.9, 0.92, 0.94] + [0.7, 0.8, 0.75],
        "pointing_centre_prior_shifted": [0.75] * 9, "pointing_chance": [0.25] * 9})
    claims = rp.claim_table(per_seed)
    assert claims["claim"].unique().tolist() == ["feature maps tied to classes"]
    assert claims["metric"].unique().tolist() == ["pointing_accuracy_shifted"]
    assert claims["head"].tolist() == ["gap", "gmp"]  # dense has no map
    assert claims["baseline"].unique().tolist() == ["centre prior"]
    assert claims.set_index("head").verdict.to_dict() == {"gap": "supported",
                                                          "gmp": "no clear difference"}
    assert claims.set_index("head").loc["gap", "improvement"] == pytest.approx(0.92 - 0.75)


def test_overall_verdict_is_contradicted_when_rows_only_go_against_the_claim():
    claims = pd.DataFrame({"claim": ["robust"] * 3, "head": ["gap", "gmp", "gsp"],
                           "verdict": ["no clear difference", "contradicted",
                                       "no clear difference"]})
    overall = rp.overall_verdicts(claims).iloc[0]
    assert overall.verdict == "contradicted"
    assert overall["rows"] == "0 supported, 1 contradicted, 2 unclear"
    assert (overall["heads supporting"], overall["heads contradicting"]) == ("none", "gmp")
    unclear = rp.overall_verdicts(claims.assign(verdict="no clear difference")).iloc[0]
    assert (unclear.verdict, unclear["heads contradicting"]) == ("not supported", "none")


def test_a_head_supports_a_claim_only_when_every_metric_of_it_does():
    claims = pd.DataFrame({"claim": ["robust"] * 4, "head": ["gap", "gap", "gmp", "gmp"],
                           "verdict": ["supported", "supported", "supported", "contradicted"]})
    overall = rp.overall_verdicts(claims).iloc[0]
    assert (overall.verdict, overall["heads supporting"]) == ("mixed", "gap")
    assert overall["heads contradicting"] == "gmp"


def test_headline_metrics_write_null_for_a_metric_a_head_does_not_have():
    per_seed = pd.DataFrame({"head": ["dense"], "fraction": [1.0], "train_shift": [0],
                             "seed": [0], "params_total": [10],
                             "params_head": [5], "pointing_accuracy": [math.nan],
                             "test_accuracy": [0.5]})
    metrics = rp.headline_metrics(per_seed)["dense"]
    assert metrics["pointing_accuracy"] is None and metrics["test_accuracy"] == 0.5


def _study_results():
    """Main runs where gap does not overfit less, a 10% fraction where it does, and runs
    trained with shifts where dense catches up on the shift grid."""
    main = _per_seed(gap_overfit=[0.01, 0.02, 0.015], dense_overfit=[0.01, 0.02, 0.015],
                     gap_shift=[0.9, 0.91, 0.92], dense_shift=[0.1, 0.12, 0.11])
    main = main.assign(fraction=1.0, train_shift=0, train_images=1000)
    small = main.assign(fraction=0.1, train_images=100, shift_accuracy_mean=math.nan,
                        overfit_gap=[0.30, 0.32, 0.31, 0.10, 0.12, 0.11])
    shifted = main.assign(train_shift=4, shift_accuracy_mean=[0.9, 0.95, 0.92, 0.93, 0.91, 0.94])
    return pd.concat([main, small, shifted], ignore_index=True)


def test_runs_split_into_main_learning_curve_and_ablation():
    results = _study_results()
    assert set(zip(*[rp.main_runs(results)[c] for c in ("fraction", "train_shift")],
                   strict=True)) == {(1.0, 0)}
    assert sorted(rp.curve_runs(results).fraction.unique()) == [0.1, 1.0]
    assert (rp.curve_runs(results).train_shift == 0).all()
    assert sorted(rp.ablation_runs(results).train_shift.unique()) == [0, 4]
    assert (rp.ablation_runs(results).fraction == 1.0).all()


def test_study_claims_test_training_dependent_claims_in_every_setting():
    claims = rp.study_claims(_study_results())
    main = "all training images (1,000), centred"
    small = "10% of the training images (100), centred"
    shifted = "all training images (1,000), random shifts up to 4 px"
    verdicts = {(r.claim, r.setting): r.verdict for r in claims.itertuples()}
    assert verdicts == {
        ("fewer parameters", main): "supported",
        ("less overfitting", main): "no clear difference",
        ("less overfitting", small): "supported",  # gap overfits less on little data
        ("less overfitting", shifted): "no clear difference",
        ("more translation robust", main): "supported",
        ("more translation robust", shifted): "no clear difference",
        ("faster training", main): "supported",
    }
    # grouped by claim, in the order of CLAIMS
    assert list(dict.fromkeys(claims.claim)) == ["fewer parameters", "less overfitting",
                                                 "more translation robust", "faster training"]
    overall = rp.overall_verdicts(claims).set_index("claim")
    assert overall.loc["less overfitting", "verdict"] == "mixed"
    assert overall.loc["less overfitting", "settings where every head supports it"] == small
    assert overall.loc["faster training", "verdict"] == "supported"


def test_grouped_stat_table_has_a_row_per_group_in_head_order():
    frame = pd.DataFrame({"head": ["gap"] * 4 + ["dense"] * 4, "fraction": [0.5, 0.5, 1, 1] * 2,
                          "test_accuracy": [0.5, 0.7, 0.9, 0.9, 0.4, 0.4, 0.8, 0.8]})
    aggregate = rp.summarize(frame, ["head", "fraction"], ["test_accuracy"])
    table = rp.grouped_stat_table(aggregate, ["head", "fraction"], ["test_accuracy"], ["acc"],
                                  ["dense", "gap"])
    assert table.values.tolist() == [["dense", "0.5", "40.0%"], ["dense", "1.0", "80.0%"],
                                     ["gap", "0.5", "60.0 ± 14.1 [-67.1, 187.1]%"],
                                     ["gap", "1.0", "90.0%"]]


def test_sum_over_average_pooling_is_h_times_w():
    check = rp.sum_vs_average(side=4, channels=8)
    assert check["factor"] == 16 and check["ratio_mean"] == pytest.approx(16, rel=1e-6)
    assert check["max_relative_deviation"] < 1e-5
