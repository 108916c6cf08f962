"""gap_study.report.claims: verdicts computed from the intervals, per head and per claim."""

import math

import pandas as pd
import pytest

from gap_study.report.claims import (
    claim_table,
    head_verdict,
    overall_verdict,
    overall_verdicts,
    setting_label,
    study_claims,
)


def _per_seed(gap_overfit, dense_overfit, gap_shift, dense_shift):
    rows = []
    for head, overfit, shifted, params, seconds in [
            ("dense", dense_overfit, dense_shift, 1000, [0.3, 0.31, 0.29]),
            ("gap", gap_overfit, gap_shift, 10, [0.1, 0.11, 0.09])]:
        for seed in range(3):
            rows.append({"head": head, "seed": seed, "params_head": params,
                         "overfit_gap": overfit[seed], "shift_accuracy_mean": shifted[seed],
                         "seconds_per_step": seconds[seed]})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("low, high, verdict", [
    (0.1, 0.3, "supported"), (-0.3, -0.1, "contradicted"), (-0.1, 0.1, "no clear difference"),
    (0.0, 0.2, "no clear difference"), (math.nan, math.nan, "untested (one seed)")])
def test_head_verdict_reads_the_interval_of_the_improvement(low, high, verdict):
    assert head_verdict(low, high) == verdict


@pytest.mark.parametrize("verdicts, expected", [
    (["supported", "supported"], "supported"),
    (["supported", "contradicted"], "mixed"),
    (["supported", "no clear difference"], "mixed"),
    (["contradicted", "no clear difference"], "contradicted"),
    (["no clear difference", "no clear difference"], "not supported")])
def test_overall_verdict_combines_the_rows_of_a_claim(verdicts, expected):
    rows = pd.Series(verdicts)
    assert overall_verdict(rows == "supported", rows == "contradicted") == expected


def test_setting_label_names_the_training_data_and_shifts():
    assert setting_label(1.0, 0) == "all training images, centred"
    assert setting_label(0.1, 3, 135) == "10% of the training images (135), " \
        "random shifts up to 3 px"


def test_claim_verdicts_follow_the_interval_of_the_improvement():
    per_seed = _per_seed(gap_overfit=[0.05, 0.06, 0.04], dense_overfit=[0.01, 0.02, 0.03],
                         gap_shift=[0.8, 0.9, 0.85], dense_shift=[0.8, 0.95, 0.7])
    claims = claim_table(per_seed).set_index("claim")
    assert claims.loc["fewer parameters", "verdict"] == "supported"
    assert claims.loc["fewer parameters", "improvement"] == 990
    assert claims.loc["less overfitting", "verdict"] == "contradicted"  # gap overfits more
    assert claims.loc["more translation robust", "verdict"] == "no clear difference"
    assert claims.loc["faster training", "verdict"] == "supported"
    overall = overall_verdicts(claim_table(per_seed)).set_index("claim").verdict
    assert overall.to_dict() == {"fewer parameters": "supported",
                                 "less overfitting": "contradicted",
                                 "more translation robust": "not supported",
                                 "faster training": "supported"}


def test_a_claim_holding_for_some_heads_only_is_mixed():
    per_seed = _per_seed([0.0] * 3, [0.0] * 3, [0.9, 0.91, 0.92], [0.1, 0.12, 0.11])
    gmp = per_seed[per_seed["head"] == "gap"].assign(head="gmp", shift_accuracy_mean=0.1)
    claims = claim_table(pd.concat([per_seed, gmp]))
    overall = overall_verdicts(claims).set_index("claim")
    assert overall.loc["more translation robust", "verdict"] == "mixed"
    assert overall.loc["more translation robust", "heads supporting"] == "gap"


def test_cam_claim_is_judged_on_shifted_images_against_the_centre_prior_without_dense():
    per_seed = pd.DataFrame({
        "head": ["dense"] * 3 + ["gap"] * 3 + ["gmp"] * 3, "seed": [0, 1, 2] * 3,
        "pointing_accuracy": [math.nan] * 3 + [1.0] * 6,  # centred: no evidence either way
        "pointing_accuracy_shifted": [math.nan] * 3 + [0.9, 0.92, 0.94] + [0.7, 0.8, 0.75],
        "pointing_centre_prior_shifted": [0.75] * 9, "pointing_chance": [0.25] * 9})
    claims = claim_table(per_seed)
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
    overall = overall_verdicts(claims).iloc[0]
    assert overall.verdict == "contradicted"
    assert overall["rows"] == "0 supported, 1 contradicted, 2 unclear"
    assert (overall["heads supporting"], overall["heads contradicting"]) == ("none", "gmp")
    unclear = overall_verdicts(claims.assign(verdict="no clear difference")).iloc[0]
    assert (unclear.verdict, unclear["heads contradicting"]) == ("not supported", "none")


def test_a_head_supports_a_claim_only_when_every_metric_of_it_does():
    claims = pd.DataFrame({"claim": ["robust"] * 4, "head": ["gap", "gap", "gmp", "gmp"],
                           "verdict": ["supported", "supported", "supported", "contradicted"]})
    overall = overall_verdicts(claims).iloc[0]
    assert (overall.verdict, overall["heads supporting"]) == ("mixed", "gap")
    assert overall["heads contradicting"] == "gmp"


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


def _step_times():
    """Three rounds of the speed stage: dense's step takes three times gap's."""
    return pd.DataFrame({"head": ["dense"] * 3 + ["gap"] * 3, "round": [0, 1, 2] * 2,
                         "seconds_per_step": [0.030, 0.031, 0.029, 0.010, 0.011, 0.009]})


def test_study_claims_test_training_dependent_claims_in_every_setting():
    results = _study_results().drop(columns="seconds_per_step")  # not the speed claim's data
    claims = study_claims(results, _step_times())
    main = "all training images (1,000), centred"
    timed = "training steps timed in turns, 3 rounds"
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
        ("faster training", timed): "supported",
    }
    # grouped by claim, in the order of CLAIMS
    assert list(dict.fromkeys(claims.claim)) == ["fewer parameters", "less overfitting",
                                                 "more translation robust", "faster training"]
    overall = overall_verdicts(claims).set_index("claim")
    assert overall.loc["less overfitting", "verdict"] == "mixed"
    assert overall.loc["less overfitting", "settings where every head supports it"] == small
    assert overall.loc["faster training", "verdict"] == "supported"
