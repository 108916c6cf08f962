"""gap_study.report.stats: the intervals and the per-group summary, against scipy."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from gap_study.report.stats import summarize, t_interval, welch_interval


def test_t_interval_matches_scipy_and_needs_two_values():
    values = [0.91, 0.95, 0.93, 0.97]
    expected = stats.t.interval(0.95, 3, loc=np.mean(values), scale=stats.sem(values))
    assert t_interval(values, 0.95) == pytest.approx(expected)
    low, high = t_interval([0.5], 0.95)
    assert math.isnan(low) and math.isnan(high)


def test_welch_interval_matches_scipy_ttest_ind():
    a, b = [1.0, 1.4, 1.2, 1.9], [0.2, 0.3, 0.9]
    diff, low, high = welch_interval(a, b, 0.9)
    ci = stats.ttest_ind(a, b, equal_var=False).confidence_interval(0.9)
    assert diff == pytest.approx(np.mean(a) - np.mean(b))
    assert (low, high) == pytest.approx((ci.low, ci.high))


def test_welch_interval_is_exact_without_spread_and_nan_with_one_value():
    assert welch_interval([650, 650, 650], [2e6, 2e6, 2e6]) == (650 - 2e6,) * 3
    diff, low, _ = welch_interval([1.0], [0.0, 1.0])
    assert diff == 0.5 and math.isnan(low)


def test_summarize_gives_one_row_per_group_and_metric():
    frame = pd.DataFrame({"head": ["a", "a", "b", "b"], "x": [1.0, 3.0, 5.0, 5.0],
                          "y": [0.0, 0.0, 1.0, 2.0]})
    table = summarize(frame, "head", ["x", "y"])
    assert table[["head", "metric"]].values.tolist() == [["a", "x"], ["a", "y"],
                                                         ["b", "x"], ["b", "y"]]
    row = table[(table["head"] == "a") & (table.metric == "x")].iloc[0]
    assert (row["n"], row["mean"], row["std"]) == (2, 2.0, pytest.approx(math.sqrt(2)))
    assert (row.ci_low, row.ci_high) == pytest.approx(t_interval([1.0, 3.0]))
