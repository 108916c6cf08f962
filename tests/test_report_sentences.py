"""The report's computed sentences: the one-minute summary (gap_study.report.verdict_text),
the sum-pooling conclusion and the ink map's comparison (gap_study.report.pooling_text)."""

import pandas as pd
import pytest

from gap_study.report.claims import claim_verdicts
from gap_study.report.forest import forest_rows
from gap_study.report.pooling_text import cam_section, sum_pooling_section
from gap_study.report.text import _downsampling_phrase
from gap_study.report.verdict_text import claims_section, summary_section


def _row(head, baseline, improvement, verdict, setting="all training images (1,000), centred"):
    return {"claim": "less overfitting", "metric": "test_loss", "role": "primary",
            "setting": setting, "head": head, "baseline": baseline,
            "improvement": improvement, "ci_low": improvement - 0.01,
            "ci_high": improvement + 0.01, "verdict": verdict, "exact": False, "margin": 0.05}


def test_the_summary_names_the_largest_decided_row_not_a_larger_inconclusive_one():
    comparisons = pd.DataFrame([
        _row("gmp", "dense", 0.094, "inconclusive", "10% of the training images (100), centred"),
        _row("gap", "dense", -0.071, "worse"),
        _row("gap", "dense_dropout", -0.030, "worse"),
    ])
    (line,) = [x for x in summary_section(comparisons, claim_verdicts(comparisons))
               if x.startswith("- **Less overfitting")]
    assert "test loss — **fails**: 2 worse, 1 inconclusive of 3 comparisons" in line
    assert "largest decided: `gap` vs `dense`, all training images (1,000), centred: " in line


def test_with_nothing_decided_the_summary_names_the_largest_effect():
    comparisons = pd.DataFrame([_row("gap", "dense", 0.02, "inconclusive"),
                                _row("gmp", "dense", -0.04, "inconclusive")])
    (line,) = [x for x in summary_section(comparisons, claim_verdicts(comparisons))
               if x.startswith("- **Less overfitting")]
    assert "**undecided**" in line and "; largest: `gmp` vs `dense`: " in line


def test_the_summary_says_which_claims_could_not_be_tested_and_on_which_metric():
    comparisons = pd.DataFrame([_row("gap", "dense", 0.02, "inconclusive")])
    lines = [x for x in summary_section(comparisons, claim_verdicts(comparisons))
             if x.startswith("- **")]
    assert [line.split("**")[1] for line in lines] == [
        "Fewer parameters", "Less overfitting", "More translation robust", "Faster training",
        "Feature maps tied to classes"]  # every claim, in the protocol's order
    assert lines[-1].endswith("not tested here: no comparison of its primary metrics "
                              "(`pointing_gradcam_two_objects`) could be made.")
    assert "not tested" not in lines[1]


def test_with_one_seed_the_claims_section_says_why_there_is_no_forest_plot():
    one_seed = pd.DataFrame([{**_row("gap", "dense", 0.02, "inconclusive"), "ci_low": float("nan"),
                              "ci_high": float("nan"), "note": "", "head_mean": 0.9,
                              "baseline_mean": 0.88, "p_difference_adjusted": float("nan"),
                              "p_equivalence_adjusted": float("nan"), "mde": float("nan")}])
    assert forest_rows(one_seed).empty
    text = "\n".join(claims_section(one_seed, claim_verdicts(one_seed), ["dense", "gap"],
                                    figures={}, alpha=0.05, level="95%"))
    assert "a paired test needs at least two seeds" in text and "forest" not in text


def _aggregate(scaled_accuracy):
    """Means and stds of gap, gsp_scaled and gsp on three metrics."""
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


@pytest.mark.parametrize(("scaled_accuracy", "expected"), [
    (0.985, "`gsp_scaled` reproduces `gap` (at most 0.2 points apart"),
    (0.960, "`gsp_scaled` does not reproduce `gap` here (2.4 points apart on these metrics, "
            "beyond the 1-point margin)"),
])
def test_the_sum_pooling_conclusion_is_computed_from_the_three_heads(scaled_accuracy,
                                                                      expected):
    text = "\n".join(sum_pooling_section(_aggregate(scaled_accuracy),
                                         ["gap", "gsp", "gsp_scaled"], FEATURE_MAP, RATES,
                                         margin=0.01))
    assert expected in text
    assert "`gap` (learning rate 0.003): test accuracy 98.4 ± 1.0%" in text


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


@pytest.mark.parametrize(("gradcam", "expected"), [
    ({"dense": 0.80, "gap": 0.90}, "in 99.0% of cases, above every head's Grad-CAM"),
    ({"dense": 0.80, "gap": 0.995}, "not above every head's Grad-CAM (`gap` 99.5%)"),
])
def test_the_ink_map_sentence_compares_it_with_the_best_heads_grad_cam(gradcam, expected):
    lines = cam_section(_pointing(gradcam, 0.99), ["dense", "gap"],
                        {"pointing": "p.png", "cam_overlays": "c.png"}, pd.DataFrame())
    (at,) = [i for i, x in enumerate(lines) if x.startswith("Grad-CAM (Selvaraju")]
    assert expected in lines[at]
    table = next(x for x in lines[at:] if x.startswith("| head"))
    assert "Grad-CAM, shifted images" in table and "ink map, shifted images" in table


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


@pytest.mark.parametrize(("gradcam", "ink", "expected"), [
    ({"dense": 0.40, "gap": 0.80, "gmp": 0.44}, 0.42,
     "Grad-CAM, highest first: `gap` 80.0%, `gmp` 44.0%, `dense` 40.0%; above the ink map: "
     "`gap` and `gmp`; not above it: `dense`. Above `dense`'s 40.0%: `gap` and `gmp`."),
    ({"dense": 0.60, "gap": 0.30}, 0.45,
     "highest first: `dense` 60.0%, `gap` 30.0%; above the ink map: `dense`; not above it: "
     "`gap`. Above `dense`'s 60.0%: no other head."),
    ({"dense": 0.30, "gap": 0.35}, 0.45, "above the ink map: no head."),
])
def test_the_two_object_sentence_is_computed_from_the_maps_and_the_ink_map(gradcam, ink,
                                                                          expected):
    lines = cam_section(_two_objects(gradcam, ink), list(gradcam),
                        {"pointing": "p.png", "cam_overlays": "c.png"}, pd.DataFrame())
    at = lines.index("### Two objects on a canvas")
    assert expected in lines[at + 2]
    assert f"Here the ink map scores {ink * 100:.1f}%, the centre prior 20.0% and chance " \
           "15.0%" in lines[at + 2]
    table = lines[at + 4]
    assert table.startswith("| head") and "| ink map" in table and "n/a" in table  # dense: CAM


def test_without_two_object_canvases_the_section_says_the_primary_test_did_not_run():
    lines = cam_section(_pointing({"dense": 0.8, "gap": 0.9}, 0.99), ["dense", "gap"],
                        {"pointing": "p.png", "cam_overlays": "c.png"}, pd.DataFrame())
    at = lines.index("### Two objects on a canvas")
    assert "`data.two_objects` is 0" in lines[at + 2] and "did not run" in lines[at + 2]


@pytest.mark.parametrize(("model", "expected"), [
    ({"downsample": "max", "blur_size": 3, "padding": "zeros"},
     "2x2 max-pooling between blocks and zero padding"),
    ({"downsample": "blurmax", "blur_size": 5, "padding": "circular"},
     "anti-aliased max-pooling (2x2 max at stride 1, then a 5x5 binomial filter at stride 2) "
     "between blocks and circular padding"),
])
def test_the_header_describes_the_backbones_downsampling_and_padding(model, expected):
    assert _downsampling_phrase(model) == expected
