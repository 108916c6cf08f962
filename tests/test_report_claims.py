"""gap_study.report.claims: the declared tests on hand-made results, their families and the
verdict per claim and metric."""

import json

import numpy as np
import pandas as pd
import pytest
from hand_made_results import HEADS, MARGINS, SEEDS, results_table, step_times

from gap_study.pipeline.paths import RunId
from gap_study.report.claims import (
    claim_comparisons,
    claim_verdicts,
    claims_record,
    largest_comparison,
)
from gap_study.report.comparisons import Margin, compare_paired
from gap_study.report.decisions import bh_q_values, holm
from gap_study.report.per_image import PerImageValues
from gap_study.report.protocol import PROTOCOL, heads_under_test, setting_label


def _with_objects(results: pd.DataFrame, dense_seen: np.ndarray | None = None,
                  rates: tuple[float, float] = (0.65, 0.85),
                  seeds_agree: bool = False) -> tuple[pd.DataFrame, dict]:
    """``results`` with per-object Grad-CAM pointing on 200 two-object canvases' objects for
    every main run: dense recognises ``dense_seen`` (the first 100) and points at ``rates[0]``,
    the pooled heads recognise the first 180 and point at ``rates[1]`` (with ``seeds_agree``,
    each head at the same objects in every seed); the results' pointing columns become their
    means. The values per head, keyed as ``PerImageValues`` takes them."""
    rng = np.random.default_rng(1)
    results, stored = results.copy(), {}
    for i in results.index[results.fraction == 1.0]:
        head, seed = results.at[i, "head"], int(results.at[i, "seed"])
        dense = head.startswith("dense")
        draw = np.random.default_rng(list(map(ord, head))) if seeds_agree else rng
        hits = draw.random(200) < rates[0 if dense else 1]
        seen = np.arange(200) < 180
        if dense:
            seen = np.arange(200) < 100 if dense_seen is None else dense_seen
        stem = RunId(1.0, 0, seed).stem
        stored.setdefault(head, {}).update({f"{stem}/pointing_gradcam_two_objects": hits,
                                            f"{stem}/recognised_two_objects": seen})
        results.loc[i, ["pointing_gradcam_two_objects",
                        "pointing_gradcam_two_objects_recognised"]] = [hits.mean(),
                                                                       hits[seen].mean()]
    return results, stored


@pytest.fixture(scope="module")
def comparisons():
    results, stored = _with_objects(results_table())
    return claim_comparisons(results, step_times(), HEADS, MARGINS,
                             per_image=PerImageValues(stored),
                             bootstrap={"resamples": 2000, "seed": 0})


def test_the_claims_are_about_the_heads_whose_pooling_replaces_the_dense_layers():
    assert heads_under_test(["dense", "linear", "gap", "gap_hidden", "gmp", "nin", "gsp_scaled",
                         "avg2x2_dense", "dense_dropout"]) == ["gap", "gmp", "nin"]


def test_every_primary_metric_of_the_protocol_is_compared_where_the_data_allow(comparisons):
    primary = comparisons[comparisons.role == "primary"]
    assert set(primary.metric) == {t.metric for t in PROTOCOL if t.primary}
    overfitting = primary[primary.claim == "less overfitting"]
    # 2 heads x 2 fractions x 2 baselines x 2 metrics
    assert len(overfitting) == 16
    assert set(overfitting.baseline) == {"dense", "dense_dropout"}
    assert set(overfitting.setting) == {setting_label(0.1, 0, 100), setting_label(1.0, 0, 1000)}
    assert (comparisons.n[comparisons.metric == "seconds_per_step"] == 5).all()  # rounds
    assert (comparisons.n[comparisons.metric == "test_accuracy"] == 6).all()  # seeds


def test_parameter_counts_are_exact_and_far_fewer(comparisons):
    rows = comparisons[comparisons.metric == "params_head"]
    assert rows.exact.all() and (rows.verdict == "better").all()
    assert rows.improvement.tolist() == [1_000_000 - 650] * 2


def test_each_claims_primary_family_is_holm_adjusted_together(comparisons):
    for claim in ("less overfitting", "faster training"):
        family = comparisons[(comparisons.claim == claim) & (comparisons.role == "primary")]
        expected = holm(family.p_difference.to_numpy())
        np.testing.assert_allclose(family.p_difference_adjusted.to_numpy(), expected)
    # one family per claim, not per claim and metric: the step times pay for the time to
    # the target's tests too
    speed = comparisons[(comparisons.claim == "faster training")
                        & (comparisons.metric == "seconds_per_step")]
    assert not np.allclose(speed.p_difference_adjusted, holm(speed.p_difference.to_numpy()))


def test_verdicts_follow_the_evidence(comparisons):
    verdict = comparisons.set_index(["metric", "head", "baseline", "setting"])["verdict"]
    main = setting_label(1.0, 0, 1000)
    assert verdict["consistency_exact", "gap", "dense", main] == "better"  # 0.9 vs 0.5
    assert verdict["time_to_target", "gap", "dense", main] == "better"  # 4 s vs 10 s
    steps = comparisons[comparisons.metric == "seconds_per_step"].set_index("head")
    assert steps.loc["gap", "verdict"] == "better"
    assert steps.loc["gap", "improvement"] == pytest.approx(2.0, rel=0.01)  # 3x faster
    # test accuracy: the same up to noise of 0.2 points, margin 1 point
    accuracy = comparisons[comparisons.metric == "test_accuracy"]
    assert set(accuracy.verdict) == {"equivalent"}
    pointing = comparisons[comparisons.metric == "pointing_accuracy_shifted"]
    assert set(pointing.baseline) == {"centre prior"}  # the reference, named for readers
    assert set(pointing.verdict) == {"better"}  # 0.8 against a centre prior of 0.6
    assert set(pointing.role) == {"secondary"}  # one object: any map that finds ink hits it


def test_the_map_claim_rests_on_grad_cam_pointing_at_each_class_on_two_object_canvases(
        comparisons):
    claim = comparisons[comparisons.claim == "feature maps tied to classes"]
    primary = claim[claim.role == "primary"]
    # protocol 4: on the objects a head recognises alone
    assert set(primary.metric) == {"pointing_gradcam_two_objects_recognised"}
    # Grad-CAM: the same method for every head, so dense is a baseline; gap_hidden (pooling,
    # then a hidden layer) asks whether removing the dense layers is what ties the maps; and
    # the ink map on the same objects
    assert sorted(zip(primary["head"], primary.baseline, strict=True)) == [
        ("gap", "dense"), ("gap", "gap_hidden"), ("gap", "ink map"), ("gmp", "dense"),
        ("gmp", "gap_hidden"), ("gmp", "ink map")]
    # against another head, on the objects both recognise (dense's first 100), seed by seed
    results, stored = _with_objects(results_table())
    row = primary[(primary["head"] == "gap") & (primary.baseline == "dense")].iloc[0]
    assert (row.n, row.sources) == (6, "seeds and test images")
    on_both = {head: np.mean([stored[head][f"{RunId(1.0, 0, seed).stem}/"
                                           "pointing_gradcam_two_objects"][:100].mean()
                              for seed in SEEDS]) for head in ("gap", "dense")}
    assert (row.head_mean, row.baseline_mean) == pytest.approx(
        (on_both["gap"], on_both["dense"]), abs=1e-12)
    own = results[results.fraction == 1.0].groupby("head")[
        "pointing_gradcam_two_objects_recognised"].mean()
    assert row.baseline_mean == pytest.approx(own["dense"], abs=1e-12)  # dense's own 100
    assert abs(row.head_mean - own["gap"]) > 1e-3  # not gap's own 180
    verdicts = primary.set_index(["head", "baseline"])["verdict"]
    # 85% against dense's 65% and the ink's 45%; the same 85% as gap_hidden: no "better"
    assert {verdicts[h, b] for h in ("gap", "gmp") for b in ("dense", "ink map")} == {"better"}
    assert {verdicts[h, "gap_hidden"] for h in ("gap", "gmp")} <= {"equivalent", "inconclusive"}
    every_object = claim[claim.metric == "pointing_gradcam_two_objects"]
    assert set(every_object.role) == {"secondary"}
    assert set(every_object.baseline) == {"dense", "ink map"}
    cam = claim[claim.metric == "pointing_two_objects"]
    assert set(cam.role) == {"secondary"} and set(cam.baseline) == {"ink map"}
    # single objects stay secondary (these results have no shifted Grad-CAM column)
    assert set(claim[claim.role == "secondary"].metric) == {
        "pointing_gradcam_two_objects", "pointing_two_objects", "pointing_accuracy_shifted"}


def test_a_head_worse_than_its_baseline_is_worse_and_a_noisy_one_inconclusive():
    noisy = np.array([0.90, 0.99, 0.91, 0.98, 0.92, 0.97])
    results = results_table({("gap", 1.0, "test_accuracy"): [0.90] * 6,
                            ("gmp", 1.0, "test_accuracy"): noisy})
    table = claim_comparisons(results, step_times(), HEADS, MARGINS)
    main = table[(table.metric == "test_accuracy") & (table.fraction == 1.0)
                 & (table.baseline == "dense")].set_index("head")
    assert main.loc["gap", "verdict"] == "worse"
    assert main.loc["gmp", "verdict"] == "inconclusive"
    assert main.loc["gmp", "mde"] > 0.01  # the spread hides anything below a point


def test_a_smaller_gap_from_lower_train_accuracy_is_called_underfitting():
    results = results_table({("gap", 1.0, "overfit_gap"): [0.01] * 6,
                            ("gap", 1.0, "train_accuracy"): [0.96] * 6})
    table = claim_comparisons(results, step_times(), HEADS, MARGINS)
    gap = table[(table.metric == "overfit_gap") & (table["head"] == "gap")
                & (table.fraction == 1.0)]
    assert (gap.improvement > 0).all() and (gap.note == "underfits").all()
    assert not (table[table.metric != "overfit_gap"].note == "underfits").any()
    # the same smaller gap and lower train accuracy, but a clearly better test accuracy: the
    # head generalises better, whatever it fits
    better = results_table({("gap", 1.0, "overfit_gap"): [0.01] * 6,
                           ("gap", 1.0, "train_accuracy"): [0.96] * 6,
                           ("gap", 1.0, "test_accuracy"): [0.99, 0.991, 0.989, 0.99, 0.992, 0.988]})
    table = claim_comparisons(better, step_times(), HEADS, MARGINS)
    gap = table[(table["head"] == "gap") & (table.fraction == 1.0)].set_index(
        ["metric", "baseline"])
    assert gap.loc[("test_accuracy", "dense"), "verdict"] == "better"
    assert gap.loc[("overfit_gap", "dense"), "note"] == ""


def test_secondary_metrics_get_bh_q_values_and_decide_no_claim(comparisons):
    secondary = comparisons[comparisons.role == "secondary"]
    assert set(secondary.metric) >= {"overfit_gap", "loss_gap", "params_total"}
    tested = secondary[~secondary.exact.astype(bool)]
    np.testing.assert_allclose(tested.p_difference_adjusted,
                               bh_q_values(tested.p_difference.to_numpy()))
    assert not np.allclose(tested.p_difference_adjusted, holm(tested.p_difference.to_numpy()))
    verdicts = claim_verdicts(comparisons)
    assert not set(verdicts.metric) & set(secondary.metric)


def test_each_claim_and_primary_metric_gets_its_own_word():
    rows = [("c", "m1", v) for v in ("better", "better")]
    rows += [("c", "m2", v) for v in ("better", "worse")]
    rows += [("c", "m3", v) for v in ("worse", "inconclusive")]
    rows += [("c", "m4", v) for v in ("equivalent", "equivalent")]
    rows += [("c", "m5", v) for v in ("equivalent", "inconclusive")]
    table = pd.DataFrame(rows, columns=["claim", "metric", "verdict"]).assign(role="primary")
    words = claim_verdicts(table).set_index("metric")["verdict"].to_dict()
    assert words == {"m1": "holds", "m2": "mixed", "m3": "fails", "m4": "no difference",
                     "m5": "undecided"}


def test_setting_label_names_the_training_data_and_shifts():
    assert setting_label(1.0, 0) == "all training images, centred"
    assert setting_label(0.1, 3, 135) == "10% of the training images (135), " \
        "random shifts up to 3 px"


def test_the_claims_record_gives_each_primary_metric_its_verdict_and_largest_effect(
        comparisons):
    record = claims_record(comparisons, claim_verdicts(comparisons))
    verdicts = claim_verdicts(comparisons)
    assert {(c, m) for c, metrics in record.items() for m in metrics} \
        == set(zip(verdicts.claim, verdicts.metric, strict=True))
    steps = record["faster training"]["seconds_per_step"]
    assert steps["verdict"] == "holds" and steps["better"] == steps["tests"] == 2
    assert steps["largest"] == "gap vs dense" and steps["largest_verdict"] == "better"
    assert steps["adjusted_low"] <= steps["effect"] <= steps["adjusted_high"]
    assert json.loads(json.dumps(record, allow_nan=False)) == record  # DVC reads it as metrics
    one_seed = claim_comparisons(results_table()[lambda r: r.seed == 0], step_times(), HEADS,
                                 MARGINS)
    single = claims_record(one_seed, claim_verdicts(one_seed))
    loss = single["less overfitting"]["test_loss"]
    assert loss["adjusted_low"] is None and loss["adjusted_high"] is None  # no interval: null
    json.dumps(single, allow_nan=False)


def test_two_heads_sharing_too_few_recognised_objects_are_not_compared_but_counted():
    # dense recognises 15 objects none of which gap or gmp recognise: no seed has the 20
    # shared objects a paired comparison needs
    results, stored = _with_objects(results_table(), dense_seen=np.arange(200) >= 185)
    table = claim_comparisons(results, step_times(), HEADS, MARGINS,
                              per_image=PerImageValues(stored),
                              bootstrap={"resamples": 2000, "seed": 0})
    family = table[(table.claim == "feature maps tied to classes") & (table.role == "primary")]
    unmade = family[family.baseline == "dense"]
    assert len(unmade) == 2 and set(unmade.note) == {"not made"}
    assert (unmade.n == 0).all() and set(unmade.verdict) == {"inconclusive"}
    assert unmade.improvement.isna().all() and set(unmade.sources) == {"not made"}
    # the four made comparisons pay for the two unmade ones: Holm over six tests
    made = family[family.baseline != "dense"]
    np.testing.assert_allclose(made.p_difference_adjusted,
                               holm([*made.p_difference, 1.0, 1.0])[:4])
    word = claim_verdicts(table).set_index("metric").loc[
        "pointing_gradcam_two_objects_recognised", "verdict"]
    assert word != "holds"  # two of its tests were never made
    record = claims_record(table, claim_verdicts(table))
    json.dumps(record, allow_nan=False)
    largest = record["feature maps tied to classes"]["pointing_gradcam_two_objects_recognised"]
    assert largest["largest"].endswith("vs ink map")  # a made comparison, not one not made
    # each made comparison's detectable difference is taken at Holm's first level of all six
    row = made[(made["head"] == "gap") & (made.baseline == "ink map")].iloc[0]
    runs = results[(results.fraction == 1.0) & (results["head"] == "gap")]
    expected = compare_paired(runs["pointing_gradcam_two_objects_recognised"],
                              runs["pointing_ink_two_objects_recognised"],
                              lower_is_better=False, margin=Margin(0.01),
                              alpha_for_mde=0.05 / 6, resamples=2000, seed=0)
    assert row.mde == pytest.approx(expected.mde, rel=1e-12)


def test_the_largest_comparison_is_taken_among_the_decided_ones():
    rows = pd.DataFrame({"head": ["gap", "gmp"], "baseline": "dense", "setting": "s",
                         "verdict": ["better", "equivalent"], "improvement": [0.01, 0.02]})
    top, decided, setting = largest_comparison(rows)
    assert (top["head"], decided, setting) == ("gap", True, "")
    top, decided, _ = largest_comparison(rows.assign(verdict="equivalent"))
    assert (top["head"], decided) == ("gmp", False)
    # nothing decided: a comparison not made (no effect) is named only if nothing else is
    undecided = pd.DataFrame({"head": ["gap", "gmp"], "baseline": "dense", "setting": "s",
                              "verdict": "inconclusive", "improvement": [np.nan, -0.001]})
    assert largest_comparison(undecided)[0]["head"] == "gmp"
    assert largest_comparison(undecided.iloc[:1])[0]["head"] == "gap"


def test_the_seeds_only_verdict_is_the_t_test_over_seeds_alone():
    # every seed points at the same objects: over the seeds gap's lead over dense is the same
    # every time (a certain difference), over the 100 shared objects it is not
    results, stored = _with_objects(results_table(), rates=(0.65, 0.70), seeds_agree=True)
    table = claim_comparisons(results, step_times(), HEADS, MARGINS,
                              per_image=PerImageValues(stored),
                              bootstrap={"resamples": 2000, "seed": 0})
    row = table[(table.metric == "pointing_gradcam_two_objects_recognised")
                & (table["head"] == "gap") & (table.baseline == "dense")].iloc[0]
    assert row.improvement > 0.01 and row.p_difference_t < 1e-6
    assert (row.verdict, row.verdict_seeds_only) == ("inconclusive", "better")
