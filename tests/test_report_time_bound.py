"""gap_study.report.claims on runs that never reach the time target: each counts at its lower
bound, and a comparison with one decides nothing."""

import numpy as np
import pandas as pd
import pytest
from hand_made_results import HEADS, MARGINS, results_table, step_times

from gap_study.report.claims import claim_comparisons
from gap_study.report.decisions import holm
from gap_study.report.forest import forest_rows
from gap_study.report.protocol import PROTOCOL


def _time_results(gap_times: list[float], dense_times: list[float],
                  bound: float = 30.0) -> pd.DataFrame:
    """``results_table`` with gap's and dense's times to the target (nan: the run never reached
    it) and each run's lower bound, ``bound`` seconds, where it did not."""
    results = results_table({("gap", 1.0, "time_to_target"): gap_times,
                            ("dense", 1.0, "time_to_target"): dense_times})
    return results.assign(time_to_target_at_least=np.where(
        results.time_to_target.isna(), bound, np.nan))


def _time_table(results: pd.DataFrame) -> pd.DataFrame:
    return claim_comparisons(results, step_times(), HEADS, MARGINS)


def _time_row(results: pd.DataFrame) -> pd.Series:
    table = _time_table(results)
    rows = table[(table.metric == "time_to_target") & (table["head"] == "gap")]
    return rows.set_index("baseline").loc["dense"]


DENSE_TIMES = [10.0, 10.5, 9.5, 10.2, 9.8, 10.1]


def test_a_run_that_never_reaches_the_target_counts_at_its_lower_bound():
    # gap reaches the target in about 4 s, except in one seed, whose run stopped short of it:
    # that pair stays, at the bound, 5 s
    row = _time_row(_time_results([4.0, np.nan, 4.1, 4.2, 3.9, 4.0], DENSE_TIMES, bound=5.0))
    assert row.n == 6 and (row.bounded_head, row.bounded_baseline) == (1, 0)
    assert row.head_mean == pytest.approx((4.0 + 5.0 + 4.1 + 4.2 + 3.9 + 4.0) / 6)
    # the same values, reached, are better; with a bound in them the row decides nothing
    reached = _time_row(_time_results([4.0, 5.0, 4.1, 4.2, 3.9, 4.0], DENSE_TIMES))
    assert reached.verdict == "better" and reached.improvement == row.improvement
    assert row.verdict == row.verdict_seeds_only == "inconclusive"
    assert row.note == "bounded" and row.p_difference == reached.p_difference  # its own p
    assert row.p_difference_adjusted == row.p_equivalence_adjusted == 1.0
    # no interval or detectable difference: at no level would they decide as its verdict does
    assert np.isnan([row.adjusted_low, row.adjusted_high, row.difference_low,
                     row.difference_high, row.mde]).all()
    table = _time_table(_time_results([4.0, np.nan, 4.1, 4.2, 3.9, 4.0], DENSE_TIMES, bound=5.0))
    assert "bounded" not in set(forest_rows(table).note)  # left out of the forest plot


@pytest.mark.parametrize("gap, dense", [
    # dense bounded, gap faster: the bound may hide a slower dense, or a wider spread
    ([4.0, 4.1, 3.9, 4.0, 4.2, 3.8], [10.0, 10.5, np.nan, 10.2, 9.8, 10.1]),
    # gap bounded and slower: the same holds the other way
    ([20.0, 21.0, np.nan, 20.5, 19.5, 20.2], DENSE_TIMES),
    # both at the same time, one bounded: not equivalent either
    ([10.0, 10.5, np.nan, 10.2, 9.8, 10.1], DENSE_TIMES),
])
def test_a_row_with_a_bound_on_either_side_decides_nothing(gap, dense):
    row = _time_row(_time_results(gap, dense, bound=9.0))
    assert row.bounded_head + row.bounded_baseline == 1
    assert row.verdict == row.verdict_seeds_only == "inconclusive" and not row.trivial
    reached = _time_row(_time_results([9.0 if np.isnan(v) else v for v in gap],
                                      [9.0 if np.isnan(v) else v for v in dense]))
    assert reached.verdict != "inconclusive"  # the same numbers, reached, decide


def test_a_bounded_row_does_not_ease_the_adjustment_of_its_family():
    # gap's time row is bounded: in the family of faster training it counts as p = 1, so the
    # step time's own test pays for it as it would for an unmade test
    table = _time_table(_time_results([4.0, np.nan, 4.1, 4.2, 3.9, 4.0], DENSE_TIMES, bound=5.0))
    family = table[(table.claim == "faster training") & (table.role == "primary")]
    tested = family.p_difference.where(family.note != "bounded", 1.0)
    np.testing.assert_allclose(family.p_difference_adjusted, holm(tested.to_numpy()))


def test_a_lower_bound_is_declared_only_where_lower_is_better():
    from gap_study.report.protocol import ClaimTest

    with pytest.raises(ValueError, match="higher-is-better"):
        ClaimTest("c", "test_accuracy", False, "accuracy", True, at_least="x")
    bounded = [t for t in PROTOCOL if t.at_least]
    assert [(t.metric, t.at_least) for t in bounded] == [
        ("time_to_target", "time_to_target_at_least")]
