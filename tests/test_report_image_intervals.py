"""gap_study.report.comparisons with the evaluate stage's per-image values: intervals over seeds
and test images (protocol version 4), on tables where the seeds agree and the images vary."""

import math

import numpy as np
import pandas as pd
import pytest

from gap_study.report.comparisons import Margin, compare_paired, comparison_row
from gap_study.report.decisions import judge_family, verdict
from gap_study.report.per_image import ImageTables


def _seeds_agree_images_vary(delta: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Five seeds x 300 test images whose difference ``delta`` varies with the image (sd 0.3,
    the same for every seed: a standard error of 0.017 over the images) and hardly with the
    seed."""
    rng = np.random.default_rng(seed)
    baseline = rng.normal(0.9, 0.01, (5, 300))
    image = rng.normal(0, 0.3, (1, 300))
    image -= image.mean()  # the observed difference is delta
    return baseline + delta + image + rng.normal(0, 0.01, (5, 300)), baseline


def test_per_image_tables_widen_the_interval_when_test_images_vary_and_seeds_agree():
    head, baseline = _seeds_agree_images_vary(0.02)
    options = {"lower_is_better": False, "margin": Margin(0.05)}
    seeds_only = compare_paired(head.mean(axis=1), baseline.mean(axis=1), **options)
    both = compare_paired(head.mean(axis=1), baseline.mean(axis=1),
                          tables=ImageTables(head, baseline), **options)
    assert both.sources == "seeds and test images"
    assert both.improvement == seeds_only.improvement
    # over the seeds the difference looks certain; the images say it is not
    assert seeds_only.p_difference < 1e-3 < 0.05 < both.p_difference
    assert both.bootstrap_high - both.bootstrap_low > 5 * (both.t_high - both.t_low)
    assert (both.ci_low, both.ci_high) == (both.bootstrap_low, both.bootstrap_high)
    assert both.mde > 5 * seeds_only.mde  # what the data could detect shrinks as well


def test_heads_that_agree_on_every_image_are_equivalent_where_the_t_test_is_undefined():
    values = np.tile([1.0, 0.0, 1.0, 1.0], (5, 25))  # both heads right on the same images
    c = compare_paired(values.mean(axis=1), values.mean(axis=1), lower_is_better=False,
                       margin=Margin(0.01), tables=ImageTables(values, values.copy()))
    assert math.isnan(c.p_difference_t)
    assert c.p_difference == 1.0 and c.p_equivalence == 1 / 10_001
    assert verdict(c, c.p_difference, c.p_equivalence) == "equivalent"


def test_per_image_tables_are_refused_for_a_relative_margin():
    head, baseline = _seeds_agree_images_vary(0.02)
    with pytest.raises(ValueError, match="absolute margin"):
        compare_paired(head.mean(axis=1), baseline.mean(axis=1), lower_is_better=False,
                       margin=Margin(0.1, relative=True), tables=ImageTables(head, baseline))


@pytest.mark.parametrize("adjust", ["holm", "bh"])
def test_with_test_images_the_adjusted_intervals_still_decide_as_the_verdicts_do(adjust):
    # seeds agree and images vary: the bootstrap's interval, not the t-test's, is the wide one,
    # so the adjusted intervals must come from both (interval_at's bootstrap branch)
    options = {"lower_is_better": False, "margin": Margin(0.01)}
    rows = []
    for i, delta in enumerate([0.0, 0.005, 0.02, 0.03, -0.03, 0.06, -0.06, 0.1]):
        head, baseline = _seeds_agree_images_vary(delta, seed=i)
        rows.append(comparison_row(head.mean(axis=1), baseline.mean(axis=1),
                                   tables=ImageTables(head, baseline), resamples=2000,
                                   **options))
    judged = judge_family(pd.DataFrame(rows).assign(lower_is_better=False, relative=False,
                                                    margin=0.01), adjust=adjust)
    excludes = (judged.difference_low > 0) | (judged.difference_high < 0)
    assert (excludes == (judged.p_difference_adjusted < 0.05)).all(), judged
    inside = (judged.adjusted_low > -0.01) & (judged.adjusted_high < 0.01)
    assert (inside == (judged.verdict == "equivalent")).all(), judged
    # the images make the wide interval: well beyond the seeds' t-interval
    assert ((judged.difference_high - judged.difference_low)
            > 3 * (judged.t_high - judged.t_low)).all()
    assert set(judged.verdict) >= {"better", "worse", "inconclusive"}
