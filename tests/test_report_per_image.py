"""gap_study.report.per_image: the evaluate stage's per-image values as paired tables."""

import math

import numpy as np
import pandas as pd
import pytest

from gap_study.report.per_image import MIN_SHARED_OBJECTS, PerImageValues

SEEDS = (0, 1, 2)


def _stored(head: str, seed: int) -> dict[str, np.ndarray]:
    """One run's per-image values, distinct for every head and seed."""
    rng = np.random.default_rng([seed, len(head)])
    return {"test_accuracy": rng.random(6) < 0.7, "test_loss": rng.random(6).astype(np.float32),
            "pointing_gradcam_two_objects": rng.random(80) < 0.5,
            "pointing_ink_two_objects": rng.random(80) < 0.5,
            "recognised_two_objects": np.r_[True, rng.random(79) < 0.8]}


def _values() -> PerImageValues:
    return PerImageValues({head: {f"fraction_1-shift_0-seed_{seed}/{metric}": values
                                  for seed in SEEDS
                                  for metric, values in _stored(head, seed).items()}
                           for head in ("dense", "gap")})


def _results() -> pd.DataFrame:
    """``results`` rows whose metrics are the per-image values' means, as the stage writes."""
    rows = []
    for head in ("dense", "gap"):
        for seed in SEEDS:
            run = _stored(head, seed)
            seen = run["recognised_two_objects"]
            rows.append({"head": head, "seed": seed, "fraction": 1.0, "train_shift": 0,
                         "train_accuracy": 0.95, "train_loss": 0.1,
                         "test_accuracy": run["test_accuracy"].mean(),
                         "test_loss": float(run["test_loss"].astype(np.float64).mean()),
                         "overfit_gap": 0.95 - run["test_accuracy"].mean(),
                         "pointing_gradcam_two_objects_recognised":
                             run["pointing_gradcam_two_objects"][seen].mean(),
                         "pointing_ink_two_objects_recognised":
                             run["pointing_ink_two_objects"][seen].mean()})
    return pd.DataFrame(rows)


def test_a_stored_metric_pairs_both_heads_seed_by_seed():
    tables = _values().pair(_results(), "gap", "dense", "test_accuracy", seeds=[2, 0])
    assert tables.head.shape == tables.baseline.shape == (2, 6)
    np.testing.assert_array_equal(tables.head[0], _stored("gap", 2)["test_accuracy"])
    np.testing.assert_array_equal(tables.baseline[1], _stored("dense", 0)["test_accuracy"])
    assert tables.head_weights is None and tables.baseline_weights is None


def test_two_heads_on_a_recognised_metric_are_weighted_by_the_objects_both_recognise():
    tables = _values().pair(_results(), "gap", "dense",
                            "pointing_gradcam_two_objects_recognised", seeds=list(SEEDS))
    both = _stored("gap", 1)["recognised_two_objects"] & _stored("dense", 1)[
        "recognised_two_objects"]
    assert 0 < both.sum() < _stored("gap", 1)["recognised_two_objects"].sum()  # a real cut
    np.testing.assert_array_equal(tables.head_weights[1], both)
    np.testing.assert_array_equal(tables.baseline_weights[1], both)
    np.testing.assert_array_equal(tables.head[1], _stored("gap", 1)["pointing_gradcam_two_objects"])


def test_a_head_that_recognises_only_easy_objects_gains_nothing_from_their_ease():
    # dense recognises the first 4 objects only, where both heads point right; gap recognises
    # all 8 and misses the last 2. On their own objects dense leads 100% to 75%; on the
    # objects both recognise they tie, which is the comparison the pairing makes
    # each object five times over: enough shared objects for a paired seed
    hits = {"dense": np.repeat(np.r_[True, True, True, True, False, False, False, False], 5),
            "gap": np.repeat(np.r_[True, True, True, True, True, True, False, False], 5)}
    seen = {"dense": np.repeat(np.r_[True, True, True, True, False, False, False, False], 5),
            "gap": np.ones(40, bool)}
    values = PerImageValues({head: {"fraction_1-shift_0-seed_0/pointing_gradcam_two_objects":
                                    hits[head],
                                    "fraction_1-shift_0-seed_0/recognised_two_objects": seen[head]}
                             for head in hits})
    rows = pd.DataFrame([{"head": head, "seed": 0, "fraction": 1.0, "train_shift": 0,
                          "pointing_gradcam_two_objects_recognised": hits[head][seen[head]].mean()}
                         for head in hits])
    assert rows.set_index("head")["pointing_gradcam_two_objects_recognised"].to_dict() == {
        "dense": 1.0, "gap": 0.75}
    tables = values.pair(rows, "gap", "dense", "pointing_gradcam_two_objects_recognised",
                         seeds=[0])
    np.testing.assert_array_equal(tables.seed_means(), ([1.0], [1.0]))


def test_a_seed_with_too_few_shared_recognised_objects_is_left_out_of_the_pairs():
    # seed 0's runs share 19 objects, seed 1's 20: a bootstrap of 19 could draw none too often
    stored, rows = {"dense": {}, "gap": {}}, []
    for seed, shared in ((0, MIN_SHARED_OBJECTS - 1), (1, MIN_SHARED_OBJECTS)):
        stem = f"fraction_1-shift_0-seed_{seed}"
        for head, seen in (("dense", np.arange(100) < shared), ("gap", np.ones(100, bool))):
            hits = np.arange(100) % 3 > 0
            stored[head] |= {f"{stem}/pointing_gradcam_two_objects": hits,
                             f"{stem}/recognised_two_objects": seen}
            rows.append({"head": head, "seed": seed, "fraction": 1.0, "train_shift": 0,
                         "pointing_gradcam_two_objects_recognised": hits[seen].mean()})
    tables = PerImageValues(stored).pair(pd.DataFrame(rows), "gap", "dense",
                                         "pointing_gradcam_two_objects_recognised", seeds=[0, 1])
    assert tables.seeds == (1,) and tables.head.shape == (1, 100)
    assert tables.head_weights.sum() == MIN_SHARED_OBJECTS


def test_two_heads_that_recognise_no_object_in_common_give_no_tables():
    values = PerImageValues({head: {"fraction_1-shift_0-seed_0/pointing_gradcam_two_objects":
                                    np.ones(2, bool),
                                    "fraction_1-shift_0-seed_0/recognised_two_objects": seen}
                             for head, seen in (("dense", np.r_[True, False]),
                                                ("gap", np.r_[False, True]))})
    rows = pd.DataFrame([{"head": head, "seed": 0, "fraction": 1.0, "train_shift": 0,
                          "pointing_gradcam_two_objects_recognised": 1.0}
                         for head in ("dense", "gap")])
    assert values.pair(rows, "gap", "dense", "pointing_gradcam_two_objects_recognised",
                       seeds=[0]) is None


def test_a_reference_is_scored_on_the_heads_own_images_and_recognised_objects():
    tables = _values().pair(_results(), "gap", "ref:pointing_ink_two_objects_recognised",
                            "pointing_gradcam_two_objects_recognised", seeds=list(SEEDS))
    np.testing.assert_array_equal(tables.baseline[0], _stored("gap", 0)["pointing_ink_two_objects"])
    np.testing.assert_array_equal(tables.baseline_weights, tables.head_weights)


def test_the_overfitting_gap_is_the_runs_training_value_against_each_test_image():
    tables = _values().pair(_results(), "gap", "dense", "overfit_gap", seeds=list(SEEDS))
    np.testing.assert_allclose(tables.head[0], 0.95 - _stored("gap", 0)["test_accuracy"])
    np.testing.assert_allclose(tables.head.mean(axis=1),
                               _results().query("head == 'gap'")["overfit_gap"])


def test_a_metric_or_a_run_without_per_image_values_gives_no_tables():
    values, results = _values(), _results()
    assert values.pair(results, "gap", "dense", "flip_rate", seeds=list(SEEDS)) is None
    assert values.pair(results, "gap", "dense", "test_accuracy", seeds=[0, 7]) is None
    assert values.pair(results.assign(fraction=0.5), "gap", "dense", "test_accuracy",
                       seeds=[0]) is None


def test_per_image_values_that_do_not_average_to_the_runs_metric_are_refused():
    results = _results()
    results.loc[(results["head"] == "dense") & (results.seed == 1), "test_accuracy"] += 0.01
    with pytest.raises(ValueError, match=r"dense's per-image values of test_accuracy for run "
                                         r"fraction_1-shift_0-seed_1 .* dvc repro -f -s evaluate"):
        _values().pair(results, "gap", "dense", "test_accuracy", seeds=list(SEEDS))


def test_a_small_loss_gap_is_checked_on_its_test_losses_not_on_the_gap():
    # losses near 30 in float32 are spaced 2e-6 apart: a gap of 0.004 taken in float32 is off
    # by about that, beyond a tolerance for the gap, well inside one for the loss itself
    losses = np.random.default_rng(0).uniform(29, 31, 450).astype(np.float32)
    test_loss = float(np.mean(losses, dtype=np.float32))
    train_loss = test_loss - 0.004
    rows = pd.DataFrame([{"head": head, "seed": 0, "fraction": 1.0, "train_shift": 0,
                          "test_loss": test_loss, "train_loss": train_loss,
                          "loss_gap": float(np.float32(test_loss) - np.float32(train_loss))}
                         for head in ("dense", "gap")])
    stored = {"fraction_1-shift_0-seed_0/test_loss": losses}
    values = PerImageValues({"dense": stored, "gap": stored})
    gap = losses.astype(np.float64).mean() - train_loss
    assert not np.isclose(gap, rows.loss_gap[0], rtol=1e-5, atol=1e-7)  # the rounding is there
    tables = values.pair(rows, "gap", "dense", "loss_gap", seeds=[0])
    np.testing.assert_allclose(tables.head[0], losses.astype(np.float64) - train_loss)
    with pytest.raises(ValueError, match="test_loss"):  # a wrong test side is still refused
        values.pair(rows.assign(test_loss=test_loss + 0.001), "gap", "dense", "loss_gap",
                    seeds=[0])


def test_the_fewest_shared_objects_make_a_resample_without_any_of_them_negligible():
    # a resample of n objects misses a seed's k shared ones with probability (1 - k/n)^n,
    # below e^-k: at k = 20, about 2e-9, so 10,000 resamples almost never meet an empty one
    assert MIN_SHARED_OBJECTS >= 20
    assert 10_000 * math.exp(-MIN_SHARED_OBJECTS) < 1e-4
