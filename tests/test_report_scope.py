"""gap_study.report.scope: what a run can and cannot say, from its records and tables."""

import math

import pandas as pd
import pytest

from gap_study.report.scope import scope_facts

DATASET = {"name": "digits", "image_size": 20, "train_images": 1212, "validation_images": 135,
           "test_images": 450}
SPEED_RUN = {"threads_per_run": 1,
             "environment": {"device_name": "AMD EPYC", "cpu_capability": "AVX512"}}


def _aggregate():
    return pd.DataFrame({"head": ["dense", "gap", "gmp"], "metric": "test_accuracy",
                         "mean": [0.984, 0.991, 0.987]})


def _comparisons():
    row = {"role": "primary", "exact": False, "claim": "less overfitting",
           "metric": "test_accuracy"}
    return pd.DataFrame([{**row, "mde": 0.012}, {**row, "mde": 0.008},
                         {**row, "metric": "params_head", "claim": "fewer parameters",
                          "exact": True, "mde": math.nan},
                         {**row, "role": "secondary", "metric": "overfit_gap", "mde": 0.001}])


def _scope(**changes):
    arguments = {"dataset": DATASET, "max_shift": 5, "aggregate": _aggregate(),
                 "comparisons": _comparisons(), "train_shifts": [0], "speed_run": SPEED_RUN,
                 "heads": ["dense", "gap", "gmp"], **changes}
    return scope_facts(**arguments)


def test_the_ceiling_is_the_best_heads_test_accuracy_and_an_image_its_share_in_points():
    scope = _scope()
    assert (scope.best, scope.ceiling) == ("gap", 0.991)
    assert scope.point == pytest.approx(100 / 450)  # 0.22 points per image
    assert _scope(heads=["dense", "gmp"]).best == "gmp"  # only the heads of this study


def test_each_tested_primary_metric_states_the_range_of_its_detectable_differences():
    # from the most to the least sensitive of its comparisons; exact counts and secondary
    # metrics need none
    assert _scope().detectable == [("less overfitting", "test accuracy", "0.8 pts to 1.2 pts")]


@pytest.mark.parametrize("name, words", [
    ("digits", "share writers"), ("mnist_5k", "share writers"), ("mnist", "different writers"),
    ("svhn", "not known"),
])
def test_whether_train_and_test_share_writers_is_said_per_data_set(name, words):
    assert words in _scope(dataset={**DATASET, "name": name}).writers


def test_the_timings_name_their_machine_and_threads():
    assert _scope().timing == {"device": "AMD EPYC", "cpu_capability": "AVX512", "threads": 1}


def test_what_the_test_images_change_counts_the_primary_rows_that_resampled_them():
    row = {"role": "primary", "exact": False, "claim": "less overfitting", "mde": 0.01,
           "head": "gap", "baseline": "dense", "setting": "all training images",
           "metric": "test_accuracy", "t_low": 0.0, "t_high": 0.01}
    comparisons = pd.DataFrame([
        {**row, "sources": "seeds and test images", "bootstrap_low": -0.01,
         "bootstrap_high": 0.02, "verdict": "inconclusive", "verdict_seeds_only": "better"},
        {**row, "sources": "seeds and test images", "bootstrap_low": 0.0,
         "bootstrap_high": 0.05, "verdict": "better", "verdict_seeds_only": "better"},
        {**row, "sources": "seeds", "metric": "time_to_target", "bootstrap_low": 0.0,
         "bootstrap_high": 1.0, "verdict": "better", "verdict_seeds_only": "better"},
        {**row, "role": "secondary", "sources": "seeds and test images",
         "bootstrap_low": 0.0, "bootstrap_high": 1.0, "verdict": "better",
         "verdict_seeds_only": "inconclusive"}])
    images = _scope(comparisons=comparisons).images
    assert images.tested == 2 and images.widening == 4.0  # the median of 3x and 5x
    assert images.changed == [("gap", "dense", "test accuracy", "all training images",
                               "inconclusive", "better")]
    assert _scope().images is None  # no row resampled test images
