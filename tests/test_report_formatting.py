"""gap_study.report.formatting: numbers in display units and the tables built from them."""

import math

import pandas as pd

from gap_study.report.formatting import (
    format_improvement,
    format_number,
    format_stat,
    grouped_stat_table,
    markdown_table,
)
from gap_study.report.stats import summarize


def test_format_stat_shows_mean_and_interval_in_display_units():
    row = {"mean": 0.9731, "std": 0.004, "ci_low": 0.963, "ci_high": 0.983}
    assert format_stat(row, "test_accuracy") == "97.3 [96.3, 98.3]%"
    exact = {"mean": 650.0, "std": 0.0, "ci_low": 650.0, "ci_high": 650.0}
    assert format_stat(exact, "params_head") == "650"


def test_an_improvement_is_signed_in_points_once_and_an_exact_one_says_so():
    assert format_number(0.1234, "test_accuracy") == "12.3%"
    assert format_number(0.1234, "test_accuracy", difference=True) == "12.3 pts"
    assert format_number(1234.5678, "unknown_metric") == "1,234.568"
    assert format_improvement(0.05, -0.01, 0.09, "flip_rate") == "+5.0 pts [-1.0, +9.0]"
    assert format_improvement(990.0, 990.0, 990.0, "params_head") == "+990 (exact)"
    assert format_improvement(0.5, math.nan, math.nan, "train_loss") == "+0.500"
    assert format_improvement(-0.2, -0.3, -0.1, "seconds_per_step") == "-20% [-30%, -10%]"
    assert format_improvement(math.nan, math.nan, math.nan, "test_loss") == "no comparison"


def test_grouped_stat_table_has_a_row_per_group_in_head_order():
    frame = pd.DataFrame({"head": ["gap"] * 4 + ["dense"] * 4, "fraction": [0.5, 0.5, 1, 1] * 2,
                          "test_accuracy": [0.5, 0.7, 0.9, 0.9, 0.4, 0.4, 0.8, 0.8]})
    aggregate = summarize(frame, ["head", "fraction"], ["test_accuracy"])
    table = grouped_stat_table(aggregate, ["head", "fraction"], ["test_accuracy"], ["acc"],
                               ["dense", "gap"])
    assert table.values.tolist() == [["dense", "0.5", "40.0%"], ["dense", "1.0", "80.0%"],
                                     ["gap", "0.5", "60.0 [-67.1, 187.1]%"],
                                     ["gap", "1.0", "90.0%"]]


def test_markdown_table_keeps_every_cell_as_written():
    table = markdown_table(pd.DataFrame({"head": ["gap"], "share": ["0.10"]}))
    assert table.splitlines()[2] == "| gap    | 0.10    |"
