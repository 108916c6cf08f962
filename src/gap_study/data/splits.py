"""Which examples go where: stratified subsamples of a data set and the nested training
fractions of the learning curve. NumPy only; every choice is fixed by a seed."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["RANKING_SEED", "fraction_subset", "steps_per_epoch", "stratified_split",
           "stratified_subsample"]

# The learning curve's ranking is one fixed draw, part of the study's definition
# (docs/study.md, "Learning-curve fractions"): independent of data.split_seed, which already
# decides which images the training set holds, and of every training seed.
RANKING_SEED = 0


def stratified_subsample(x: np.ndarray, y: np.ndarray, max_count: int | None,
                         seed: int) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_count`` examples of ``(x, y)``, drawn per class in proportion to it.

    ``x``: ``(N, ...)``, ``y``: ``(N,)`` class labels. Each class gets its share of
    ``max_count`` (rounded by largest remainder, so the shares add up to exactly
    ``max_count``), drawn at random without replacement; the same ``seed`` always picks the
    same examples. The kept examples stay in their original order. ``None`` or a
    ``max_count`` of at least ``N`` keeps everything.
    """
    if len(x) != len(y):
        raise ValueError(f"x has {len(x)} examples but y has {len(y)} labels")
    if max_count is not None and max_count < 1:
        raise ValueError(f"max_count must be at least 1 or None, got {max_count}")
    if max_count is None or max_count >= len(y):
        return x, y
    classes, class_sizes = np.unique(y, return_counts=True)
    shares = _largest_remainder_shares(class_sizes, max_count)
    rng = np.random.default_rng(seed)
    keep = [rng.choice(np.flatnonzero(y == label), size=share, replace=False)
            for label, share in zip(classes, shares, strict=True)]
    index = np.sort(np.concatenate(keep))
    return x[index], y[index]


def _largest_remainder_shares(sizes: np.ndarray, total: int) -> np.ndarray:
    """Integer shares of ``total`` proportional to ``sizes`` that add up to ``total``."""
    exact = sizes * total / sizes.sum()
    shares = np.floor(exact).astype(np.int64)
    # Give the units lost to rounding down to the largest remainders (ties: first class).
    order = np.argsort(-(exact - shares), kind="stable")
    shares[order[:total - shares.sum()]] += 1
    return shares


def fraction_subset(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted indices of ``round(fraction * N)`` (at least 1) examples, stratified by class.

    The examples are ranked once, classes interleaved in proportion to their sizes (a fixed
    random order within each class, drawn with ``RANKING_SEED``), and a fraction keeps a
    prefix of that ranking: smaller fractions are subsets of larger ones and every head and
    seed sees the same examples, so a learning curve compares heads on identical data.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(RANKING_SEED)
    position = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # the k-th of n members of a class sits at (k + 0.5) / n along the ranking
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    ranking = np.argsort(position, kind="stable")
    return np.sort(ranking[:max(1, round(fraction * len(labels)))])


def stratified_split(labels: np.ndarray, fraction: float,
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted indices ``(kept, held_out)`` of ``labels``: ``held_out`` is a class-stratified
    ``fraction`` (scikit-learn's ``train_test_split``, fixed by ``seed``); ``fraction == 0``
    holds out nothing."""
    index = np.arange(len(labels))
    if fraction == 0:
        return index, index[:0]
    classes, counts = np.unique(labels, return_counts=True)
    held = math.ceil(fraction * len(labels))
    if counts.min() < 2 or held < len(classes) or len(labels) - held < len(classes):
        raise ValueError(f"a stratified {fraction:g} of {len(labels)} images in "
                         f"{len(classes)} classes (the smallest has {counts.min()}) cannot "
                         "put every class on both sides: it needs at least 2 images a class "
                         "and one a class on each side")
    from sklearn.model_selection import train_test_split  # slow to import: only when needed

    kept, held_out = train_test_split(index, test_size=fraction, stratify=labels,
                                      random_state=seed)
    return np.sort(kept), np.sort(held_out)


def steps_per_epoch(images: int, batch_size: int, drop_last: bool) -> int:
    """Optimizer steps of one pass over ``images``: with ``drop_last`` only full batches."""
    return images // batch_size if drop_last else math.ceil(images / batch_size)
