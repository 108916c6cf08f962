"""Which examples go where: stratified subsamples and the learning curve's nested fractions."""

import numpy as np
import pytest

from gap_study.data.splits import (
    fraction_subset,
    steps_per_epoch,
    stratified_split,
    stratified_subsample,
)


def imbalanced() -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.array([0, 1, 2], dtype=np.int64), [60, 30, 10])
    y = np.random.default_rng(5).permutation(y)
    x = np.arange(len(y))[:, None] * np.ones((1, 2), dtype=np.int64)  # row i holds i
    return x, y


def test_stratified_subsample_keeps_class_proportions_and_pairs():
    x, y = imbalanced()
    xs, ys = stratified_subsample(x, y, max_count=20, seed=0)
    assert np.bincount(ys).tolist() == [12, 6, 2]
    np.testing.assert_array_equal(y[xs[:, 0]], ys)  # each image keeps its label
    assert (np.diff(xs[:, 0]) > 0).all()  # original order, no repeats


def test_stratified_subsample_hits_max_count_exactly_when_shares_round():
    x, y = imbalanced()
    _, ys = stratified_subsample(x, y, max_count=7, seed=3)
    assert len(ys) == 7 and np.bincount(ys, minlength=3).tolist() == [4, 2, 1]


def test_stratified_subsample_is_deterministic_per_seed():
    x, y = imbalanced()
    a = stratified_subsample(x, y, 20, seed=1)[0]
    np.testing.assert_array_equal(a, stratified_subsample(x, y, 20, seed=1)[0])
    assert not np.array_equal(a, stratified_subsample(x, y, 20, seed=2)[0])


@pytest.mark.parametrize("max_count", [None, 100, 1000])
def test_stratified_subsample_keeps_everything_when_not_limiting(max_count):
    x, y = imbalanced()
    xs, ys = stratified_subsample(x, y, max_count, seed=0)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)


def test_stratified_subsample_rejects_a_count_below_one():
    x, y = imbalanced()
    with pytest.raises(ValueError, match="at least 1"):
        stratified_subsample(x, y, 0, seed=0)


def test_fraction_subsets_are_nested_stratified_and_sized_by_the_fraction():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])  # 100 examples, unequal classes
    tenth, third, whole = (fraction_subset(labels, f) for f in (0.1, 0.3, 1.0))
    assert (len(tenth), len(third)) == (10, 30) and np.array_equal(whole, np.arange(100))
    assert set(tenth) <= set(third)  # a learning curve adds examples, never swaps them
    assert np.bincount(labels[tenth]).tolist() == [4, 3, 2, 1]
    assert np.bincount(labels[third]).tolist() == [12, 9, 6, 3]
    assert np.array_equal(fraction_subset(labels, 0.3), third)  # fixed: no seed involved
    assert np.all(np.diff(third) > 0)  # sorted indices


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.5])
def test_fraction_subset_rejects_fractions_outside_zero_to_one(fraction):
    with pytest.raises(ValueError, match=r"fraction must be in \(0, 1\]"):
        fraction_subset(np.zeros(10, dtype=np.int64), fraction)


def test_a_stratified_split_holds_out_each_classs_share_and_is_fixed_by_its_seed():
    labels = np.repeat(np.arange(4), [40, 30, 20, 10])
    kept, held_out = stratified_split(labels, 0.1, seed=3)
    assert len(held_out) == 10 and np.bincount(labels[held_out]).tolist() == [4, 3, 2, 1]
    assert sorted(np.concatenate([kept, held_out]).tolist()) == list(range(100))
    assert np.array_equal(stratified_split(labels, 0.1, seed=3)[1], held_out)
    assert not np.array_equal(stratified_split(labels, 0.1, seed=4)[1], held_out)
    kept, held_out = stratified_split(labels, 0.0, seed=3)
    assert len(held_out) == 0 and len(kept) == 100


@pytest.mark.parametrize(("images", "drop_last", "steps"), [(130, True, 2), (130, False, 3),
                                                            (63, True, 0), (64, True, 1)])
def test_an_epoch_takes_the_full_batches_only_with_drop_last(images, drop_last, steps):
    assert steps_per_epoch(images, 64, drop_last) == steps


@pytest.mark.parametrize(("labels", "fraction"), [
    (np.repeat(np.arange(10), 2), 0.1),   # holds out 2 images: not one of each of 10 classes
    (np.array([0, 0, 1, 1, 2]), 0.5),     # class 2 has a single image
])
def test_a_split_that_cannot_keep_every_class_on_both_sides_says_why(labels, fraction):
    with pytest.raises(ValueError, match=r"cannot put every class on both sides"):
        stratified_split(labels, fraction, seed=0)
