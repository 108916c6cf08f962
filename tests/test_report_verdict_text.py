"""gap_study.report.verdict_text: the report's one-minute summary, computed from the
comparisons."""

import pandas as pd

from gap_study.report.claims import claim_verdicts
from gap_study.report.forest import forest_rows
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
               if x.startswith("- **")]
    assert "test loss — **fails**: 2 worse, 1 inconclusive of 3 comparisons" in line
    assert "largest decided: `gap` vs `dense`, all training images (1,000), centred: " in line


def test_with_nothing_decided_the_summary_names_the_largest_effect():
    comparisons = pd.DataFrame([_row("gap", "dense", 0.02, "inconclusive"),
                                _row("gmp", "dense", -0.04, "inconclusive")])
    (line,) = [x for x in summary_section(comparisons, claim_verdicts(comparisons))
               if x.startswith("- **")]
    assert "**undecided**" in line and "; largest: `gmp` vs `dense`: " in line


def test_with_one_seed_the_claims_section_says_why_there_is_no_forest_plot():
    one_seed = pd.DataFrame([{**_row("gap", "dense", 0.02, "inconclusive"), "ci_low": float("nan"),
                              "ci_high": float("nan"), "note": "", "head_mean": 0.9,
                              "baseline_mean": 0.88, "p_difference_adjusted": float("nan"),
                              "p_equivalence_adjusted": float("nan"), "mde": float("nan")}])
    assert forest_rows(one_seed).empty
    text = "\n".join(claims_section(one_seed, claim_verdicts(one_seed), ["dense", "gap"],
                                    figures={}, alpha=0.05, level="95%"))
    assert "a paired test needs at least two seeds" in text and "forest" not in text
