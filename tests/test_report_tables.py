"""gap_study.report.tables on hand-made frames: which runs each comparison uses, the typed
study tables and the headline metrics."""

import math

import pandas as pd
import pytest

from gap_study.report.tables import (
    HEADLINE_METRICS,
    SUMMARY_METRICS,
    StudyTables,
    ablation_runs,
    curve_runs,
    head_order,
    headline_metrics,
    main_runs,
    phase_accuracy,
    phase_table,
    study_tables,
    time_to_target,
)


def test_headline_metrics_are_means_of_the_main_runs_plus_curve_and_ablation():
    main = {"head": ["gap", "gap"], "fraction": [1.0, 1.0], "train_shift": [0, 0],
            "seed": [0, 1], **{m: [1.0, 2.0] for m in HEADLINE_METRICS},
            "params_total": [700, 700], "params_head": [650, 650],
            "seconds_per_epoch": [0.1, 0.2]}
    small = {**main, "fraction": [0.5, 0.5], "overfit_gap": [0.3, 0.5]}
    shifted = {**main, "train_shift": [4, 4], "consistency_exact": [0.9, 0.7]}
    results = pd.concat([pd.DataFrame(part) for part in (main, small, shifted)])
    metrics = headline_metrics(results, {"gap": 0.003})
    main_means = {m: 1.5 for m in HEADLINE_METRICS}
    assert metrics == {"gap": {
        **main_means, "params_total": 700, "params_head": 650, "seeds": 2,
        "learning_rate": 0.003,
        "by_fraction": {"0.5": {"test_accuracy": 1.5, "test_loss": 1.5, "overfit_gap": 0.4},
                        "1": {"test_accuracy": 1.5, "test_loss": 1.5, "overfit_gap": 1.5}},
        "by_train_shift": {
            "0": {"shift_accuracy_mean": 1.5, "consistency_exact": 1.5,
                  "flip_rate_all_pairs": 1.5},
            "4": {"shift_accuracy_mean": 1.5, "consistency_exact": 0.8,
                  "flip_rate_all_pairs": 1.5}}}}
    assert isinstance(metrics["gap"]["params_head"], int)


def test_headline_metrics_write_null_for_a_metric_a_head_does_not_have():
    per_seed = pd.DataFrame({"head": ["dense"], "fraction": [1.0], "train_shift": [0],
                             "seed": [0], "params_total": [10],
                             "params_head": [5], "pointing_accuracy": [math.nan],
                             "test_accuracy": [0.5]})
    metrics = headline_metrics(per_seed, {"dense": 0.001})["dense"]
    assert metrics["pointing_accuracy"] is None and metrics["test_accuracy"] == 0.5


def _variants() -> pd.DataFrame:
    """Two heads x two seeds of the main runs (whole set, centred), a 10% fraction and runs
    trained with shifts up to 4 px; every summary metric ``0.5 + 0.1 * seed``."""
    rows = [{"head": head, "seed": seed, "fraction": fraction, "train_shift": shift,
             **{metric: 0.5 + 0.1 * seed for metric in SUMMARY_METRICS},
             "train_images": round(1000 * fraction)}
            for fraction, shift in [(1.0, 0), (0.1, 0), (1.0, 4)]
            for head in ("dense", "gap") for seed in (0, 1)]
    return pd.DataFrame(rows)


def test_runs_split_into_main_learning_curve_and_ablation():
    results = _variants()
    assert set(zip(*[main_runs(results)[c] for c in ("fraction", "train_shift")],
                   strict=True)) == {(1.0, 0)}
    assert sorted(curve_runs(results).fraction.unique()) == [0.1, 1.0]
    assert (curve_runs(results).train_shift == 0).all()
    assert sorted(ablation_runs(results).train_shift.unique()) == [0, 4]
    assert (ablation_runs(results).fraction == 1.0).all()


def test_study_tables_are_a_typed_record_of_the_three_comparisons():
    grid = pd.DataFrame([{**run, "dx": dx, "dy": 0, "radius": abs(dx), "accuracy": 0.5}
                         for run in _variants().to_dict("records") for dx in (-1, 0, 1)])
    tables = study_tables(_variants(), grid)
    assert isinstance(tables, StudyTables)
    assert tables._fields == ("main", "aggregate", "by_radius", "curve", "curve_aggregate",
                              "ablation", "ablation_aggregate", "ablation_by_radius")
    assert len(tables.main) == 4 and set(tables.aggregate["head"]) == {"dense", "gap"}
    assert sorted(tables.curve_aggregate.fraction.unique()) == [0.1, 1.0]
    assert sorted(tables.ablation_by_radius.train_shift.unique()) == [0, 4]
    assert sorted(tables.by_radius.radius.unique()) == [0, 1]


def test_head_order_sorts_heads_as_listed_and_other_columns_as_usual():
    frame = pd.DataFrame({"head": ["gap", "dense", "gap", "dense"], "seed": [1, 1, 0, 0]})
    ordered = frame.sort_values(["head", "seed"], key=head_order(["gap", "dense"]))
    assert list(zip(ordered["head"], ordered.seed, strict=True)) == [
        ("gap", 0), ("gap", 1), ("dense", 0), ("dense", 1)]


def test_phase_accuracy_splits_each_runs_grid_into_whole_cell_and_other_shifts():
    offsets = [(dx, dy) for dy in range(-2, 3) for dx in range(-2, 3)]
    grid = pd.DataFrame([{"head": "gap", "fraction": 1.0, "train_shift": 0, "seed": 0,
                          "dx": dx, "dy": dy,
                          "accuracy": 1.0 if dx % 2 == 0 and dy % 2 == 0 else 0.25}
                         for dx, dy in offsets])
    table = phase_accuracy(grid, stride=2)
    assert table[["aligned_shift_accuracy", "other_shift_accuracy"]].values.tolist() == \
        [[1.0, 0.25]]  # the centre, at 1.0 too, counts in neither


def test_phase_table_averages_each_phase_per_seed_then_over_seeds():
    def accuracy(dx, dy, seed):
        return 0.9 if dx % 2 == 0 and dy % 2 == 0 else 0.5 + 0.1 * seed if dy % 2 == 0 else 0.2
    grid = pd.DataFrame([{"head": head, "seed": seed, "dx": dx, "dy": dy,
                          "accuracy": accuracy(dx, dy, seed) if head == "gap" else 1.0}
                         for head in ("dense", "gap") for seed in (0, 1)
                         for dx in range(-2, 3) for dy in range(-2, 3)])
    table = phase_table(grid, stride=2, heads=["gap", "dense"])
    assert list(table.columns) == ["head", "(0,0)", "(1,0)", "(0,1)", "(1,1)"]
    assert table.set_index("head").to_dict("index") == {
        "gap": {"(0,0)": 90.0, "(1,0)": 55.0, "(0,1)": 20.0, "(1,1)": 20.0},
        "dense": {"(0,0)": 100.0, "(1,0)": 100.0, "(0,1)": 100.0, "(1,1)": 100.0}}


def test_a_run_that_never_reaches_the_target_has_one_more_epoch_as_a_lower_bound():
    # seed 0 reaches 0.9 at epoch 2; seed 1 never does in its 3 epochs
    history = pd.DataFrame({"head": "gap", "fraction": 1.0, "train_shift": 0,
                            "seed": [0, 0, 0, 1, 1, 1], "epoch": [1, 2, 3] * 2,
                            "val_accuracy": [0.5, 0.92, 0.95, 0.5, 0.7, 0.85]})
    steps = pd.DataFrame({"head": "gap", "round": [0, 1], "seconds_per_step": [0.02, 0.01]})
    times = time_to_target(history, steps, target=0.9, steps_per_epoch=10).set_index("seed")
    assert times.loc[0, "epochs_to_target"] == 2
    assert times.loc[0, "time_to_target"] == pytest.approx(2 * 10 * 0.01)  # best round
    assert math.isnan(times.loc[0, "time_to_target_at_least"])
    assert math.isnan(times.loc[1, "epochs_to_target"])
    assert math.isnan(times.loc[1, "time_to_target"])
    # 3 epochs without the target: it needs at least a fourth
    assert times.loc[1, "time_to_target_at_least"] == pytest.approx(4 * 10 * 0.01)
