"""The report's computed facts (gap_study.report.facts and pooling_facts): the claims' verdict
lines, the sum-pooling conclusion, the ink map against Grad-CAM and the two-object canvases.
The sentences they feed are in the template; ``test_report_render`` renders them."""

import pandas as pd
import pytest

from gap_study.report.claims import claim_verdicts
from gap_study.report.forest import forest_rows
from gap_study.report.pooling_facts import cam_facts, sum_pooling_facts
from gap_study.report.verdict_facts import claim_facts, secondary_facts


def _row(head, baseline, improvement, verdict, setting="all training images (1,000), centred"):
    return {"claim": "less overfitting", "metric": "test_loss", "role": "primary",
            "setting": setting, "head": head, "baseline": baseline,
            "improvement": improvement, "ci_low": improvement - 0.01,
            "ci_high": improvement + 0.01, "adjusted_low": improvement - 0.02,
            "adjusted_high": improvement + 0.02, "difference_low": improvement - 0.03,
            "difference_high": improvement + 0.03, "verdict": verdict, "trivial": False,
            "exact": False, "margin": 0.05}


def _overfitting(comparisons: pd.DataFrame):
    (claim,) = [c for c in claim_facts(comparisons, claim_verdicts(comparisons))
                if c.name == "less overfitting"]
    return claim


def test_the_verdict_line_names_the_largest_decided_row_not_a_larger_inconclusive_one():
    comparisons = pd.DataFrame([
        _row("gmp", "dense", 0.094, "inconclusive", "10% of the training images (100), centred"),
        _row("gap", "dense", -0.071, "worse"),
        _row("gap", "dense_dropout", -0.030, "worse"),
    ])
    (loss,) = _overfitting(comparisons).metrics
    assert (loss.label, loss.verdict, loss.tests) == ("test loss", "fails", 3)
    assert loss.counts == {"worse": 2, "inconclusive": 1}  # in the order better, worse, ...
    assert loss.decided and loss.strongest_verdict == "worse"
    assert loss.strongest.startswith("`gap` vs `dense`, all training images (1,000), centred: ")
    assert loss.margin == "±0.050"


def test_with_nothing_decided_the_verdict_line_names_the_largest_effect():
    comparisons = pd.DataFrame([_row("gap", "dense", 0.02, "inconclusive"),
                                _row("gmp", "dense", -0.04, "inconclusive")])
    (loss,) = _overfitting(comparisons).metrics
    assert loss.verdict == "undecided" and not loss.decided
    assert loss.strongest.startswith("`gmp` vs `dense`: ")  # one setting: not named


def test_every_claim_is_listed_in_order_and_untested_ones_name_their_primary_metrics():
    comparisons = pd.DataFrame([_row("gap", "dense", 0.02, "inconclusive")])
    claims = claim_facts(comparisons, claim_verdicts(comparisons))
    assert [c.name for c in claims] == ["fewer parameters", "less overfitting",
                                        "more translation robust", "faster training",
                                        "feature maps tied to classes"]
    assert claims[-1].untested == ["pointing_gradcam_two_objects_recognised"]
    assert not claims[-1].metrics
    assert claims[1].untested == [] and len(claims[1].metrics) == 1


def test_without_verdicts_there_are_no_claim_facts():
    assert claim_facts(pd.DataFrame(), pd.DataFrame()) == []


def test_with_one_seed_no_comparison_reaches_the_forest_plot():
    one_seed = pd.DataFrame([{**_row("gap", "dense", 0.02, "inconclusive"),
                              "ci_low": float("nan"), "ci_high": float("nan"),
                              "adjusted_low": float("nan"), "adjusted_high": float("nan"),
                              "difference_low": float("nan"),
                              "difference_high": float("nan")}])
    assert forest_rows(one_seed).empty


def _aggregate(scaled_accuracy):
    """Means and stds of gap, gsp and gsp_scaled on three metrics."""
    means = {"gap": (0.984, 0.687, 0.763), "gsp": (0.985, 0.571, 0.659),
             "gsp_scaled": (scaled_accuracy, 0.686, 0.761)}
    return pd.DataFrame([{"head": head, "metric": metric, "mean": value, "std": 0.01}
                         for head, values in means.items()
                         for metric, value in zip(("test_accuracy", "consistency_exact",
                                                   "shift_accuracy_mean"), values,
                                                  strict=True)])


FEATURE_MAP = {"shape": [64, 5, 5], "sum_over_average": {"ratio_mean": 25.0,
                                                         "max_relative_deviation": 1e-7}}
RATES = {"gap": 0.003, "gsp": 0.003, "gsp_scaled": 0.003}


@pytest.mark.parametrize(("scaled_accuracy", "scaled", "reproduces"),
                         [(0.985, 0.2, True), (0.960, 2.4, False)])
def test_the_sum_pooling_conclusion_is_computed_from_the_three_heads(scaled_accuracy, scaled,
                                                                      reproduces):
    facts = sum_pooling_facts(_aggregate(scaled_accuracy), ["gap", "gsp", "gsp_scaled"],
                              FEATURE_MAP, RATES, margin=0.01)
    assert facts.scaled == pytest.approx(scaled) and facts.reproduces is reproduces
    assert facts.summed == pytest.approx(11.6)  # gsp's consistency, 68.7 vs 57.1
    assert facts.results["gap"] == (0.003, [("test accuracy", 0.984, 0.01),
                                            ("exact consistency", 0.687, 0.01),
                                            ("accuracy over the shift grid", 0.763, 0.01)])
    assert (facts.channels, facts.height, facts.width, facts.ratio) == (64, 5, 5, 25.0)


def test_without_the_three_heads_sum_pooling_has_only_the_measured_factor():
    facts = sum_pooling_facts(_aggregate(0.985), ["dense", "gap"], FEATURE_MAP, RATES, 0.01)
    assert not facts.shown and facts.results is None and not facts.reproduces
    assert sum_pooling_facts(_aggregate(0.985), ["gap", "gsp"], FEATURE_MAP, RATES, 0.01).shown


def _pointing(gradcam: dict[str, float], ink: float) -> pd.DataFrame:
    rows = []
    for head, level in gradcam.items():
        for metric, mean in [("pointing_gradcam", level), ("pointing_gradcam_shifted", level),
                             ("pointing_accuracy", level), ("pointing_accuracy_shifted", level),
                             ("pointing_ink_shifted", ink), ("pointing_chance", 0.2),
                             ("pointing_centre_prior_shifted", 0.6)]:
            rows.append({"head": head, "metric": metric, "n": 5, "mean": mean, "std": 0.01,
                         "ci_low": mean - 0.01, "ci_high": mean + 0.01})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("gradcam", "above_all", "best"), [
    ({"dense": 0.80, "gap": 0.90}, True, "gap"),
    ({"dense": 0.995, "gap": 0.90}, False, "dense"),
])
def test_the_ink_map_is_compared_with_the_best_heads_grad_cam(gradcam, above_all, best):
    facts = cam_facts(_pointing(gradcam, 0.99), ["dense", "gap"])
    assert facts.gradcam.ink == pytest.approx(0.99) and facts.gradcam.best_head == best
    assert facts.gradcam.ink_above_all is above_all
    # one table: CAM beside Grad-CAM, blank for a head without a class activation map
    table = facts.gradcam.table.set_index("head")
    assert list(table.columns) == ["CAM, centred", "CAM, shifted", "Grad-CAM, centred",
                                   "Grad-CAM, shifted"]
    assert table.loc["dense", "CAM, shifted"] == "" and table.loc["gap", "CAM, shifted"] != ""
    assert facts.pointing is None
    # the references, the same for every head, are in the text, not in a column
    assert (facts.centre_prior, facts.chance) == pytest.approx((0.6, 0.2))


def test_only_heads_linear_on_pooled_maps_get_a_class_activation_map():
    facts = cam_facts(_pointing({"dense": 0.8, "gap": 0.9, "gap_hidden": 0.9}, 0.99),
                      ["dense", "gap", "gap_hidden"])
    assert (facts.with_cam, facts.flatten, facts.hidden) == (["gap"], ["dense"], ["gap_hidden"])
    assert list(facts.gradcam.table.set_index("head")["CAM, centred"].astype(bool)) == [
        False, True, False]


def _two_objects(gradcam: dict[str, float], ink: float) -> pd.DataFrame:
    """``_pointing`` plus the two-object metrics: each head's Grad-CAM, its CAM (none for
    ``dense``) and the references, the same for every head."""
    rows = []
    for head, level in gradcam.items():
        for metric, mean in [("pointing_gradcam_two_objects", level),
                             ("pointing_two_objects", float("nan") if head == "dense" else level),
                             ("pointing_ink_two_objects", ink),
                             ("pointing_centre_prior_two_objects", 0.2),
                             ("pointing_chance_two_objects", 0.15)]:
            rows.append({"head": head, "metric": metric, "n": 5, "mean": mean, "std": 0.01,
                         "ci_low": mean - 0.01, "ci_high": mean + 0.01})
    return pd.concat([_pointing(gradcam, 0.99), pd.DataFrame(rows)], ignore_index=True)


@pytest.mark.parametrize(("gradcam", "ink", "ranked", "above", "below", "above_dense"), [
    ({"dense": 0.40, "gap": 0.80, "gmp": 0.44}, 0.42, ["gap", "gmp", "dense"],
     ["gap", "gmp"], ["dense"], ["gap", "gmp"]),
    ({"dense": 0.60, "gap": 0.30}, 0.45, ["dense", "gap"], ["dense"], ["gap"], []),
    ({"dense": 0.30, "gap": 0.35}, 0.45, ["gap", "dense"], [], ["gap", "dense"], ["gap"]),
])
def test_two_object_pointing_ranks_the_maps_against_the_ink_map_and_dense(
        gradcam, ink, ranked, above, below, above_dense):
    facts = cam_facts(_two_objects(gradcam, ink), list(gradcam)).two_objects
    assert [head for head, _ in facts.ranked] == ranked
    assert (facts.above_ink, facts.below_ink, facts.above_dense) == (above, below, above_dense)
    assert (facts.ink, facts.centre, facts.chance) == pytest.approx((ink, 0.2, 0.15))
    assert facts.dense == pytest.approx(gradcam["dense"])
    assert facts.table.loc[facts.table["head"] == "dense", "CAM"].item() == "n/a"


def test_without_two_object_canvases_there_are_no_two_object_facts():
    assert cam_facts(_pointing({"dense": 0.8, "gap": 0.9}, 0.99), ["dense", "gap"]) \
        .two_objects is None


def test_every_comparison_a_tested_head_loses_is_named_primary_or_secondary():
    rows = pd.DataFrame([
        {**_row("gap", "ink map", -0.231, "worse"), "role": "secondary",
         "metric": "pointing_gradcam_shifted", "ci_low": -0.313, "ci_high": -0.148,
         "adjusted_low": -0.333, "adjusted_high": -0.128, "difference_low": -0.35,
         "difference_high": -0.11},
        {**_row("gmp", "dense", 0.02, "better"), "role": "secondary"},
        {**_row("gap", "dense", 0.02, "better")},  # primary: not counted here
        # a primary loss that is not its claim's largest effect: named all the same
        {**_row("gmp", "dense_dropout", -0.06, "worse")},
    ])
    facts = secondary_facts(rows)
    assert facts.counts == {"better": 1, "worse": 1}
    # with the adjusted interval, the one the verdict read
    assert facts.worse == [("gap", "ink map", "Grad-CAM pointing on shifted images (secondary)",
                            "-23.1 pts [-33.3, -12.8] (difference [-35.0, -11.0])"),
                           ("gmp", "dense_dropout", "test loss",
                            "-0.060 [-0.080, -0.040] (difference [-0.090, -0.030])")]
    assert secondary_facts(pd.DataFrame()).counts == {}


def test_a_note_is_explained_only_where_a_comparison_carries_it():
    rows = pd.DataFrame([{**_row("gap", "dense", 0.02, "better"), "role": "secondary",
                          "note": note} for note in ("", "", "")])
    assert secondary_facts(rows).notes == ()
    rows.loc[1, "note"] = "not made"
    rows.loc[2, "note"] = "underfits"
    assert secondary_facts(rows).notes == ("underfits", "not made")
    assert secondary_facts(pd.DataFrame()).notes == ()


def test_runs_that_never_reach_the_time_target_are_counted_per_head():
    from gap_study.report.facts import _missed

    main = pd.DataFrame({"head": ["dense"] * 3 + ["gap"] * 3,
                         "epochs_to_target": [3.0, 4.0, 3.0, 5.0, float("nan"), float("nan")]})
    # gap's two misses drop out of its per-head time to the target: the report says so
    assert _missed(main, ["dense", "gap"]) == [("gap", 2, 3)]
    assert _missed(main.assign(epochs_to_target=1.0), ["dense", "gap"]) == []


def test_only_tested_heads_with_more_mean_epochs_than_dense_are_named():
    from gap_study.report.facts import _more_epochs

    epochs = pd.Series({"dense": 3.2, "dense_dropout": 4.0, "gap": 4.4, "gmp": 3.2, "nin": 3.0})
    # dense_dropout is a baseline; gmp ties dense; nin needs fewer
    assert _more_epochs(epochs, ["dense", "dense_dropout", "gap", "gmp", "nin"]) == [
        ("gap", 4.4, 3.2)]
    assert _more_epochs(epochs.drop("dense"), ["gap"]) == []


def test_the_published_errors_sit_beside_this_studys_errors_not_its_accuracies():
    from gap_study.report.facts import _published

    aggregate = pd.DataFrame({"head": ["gap", "dense"], "metric": "test_accuracy",
                              "mean": [0.99, 0.98]})
    ours, table = _published("mnist", aggregate, ["gap", "dense"], [])
    assert ours == pytest.approx({"gap": 0.01, "dense": 0.02})
    assert table.value.tolist() == ["0.47%", "1.00%", "2.00%"]
    assert _published("digits", aggregate, ["gap"], [])[0] == {}  # nothing published there
