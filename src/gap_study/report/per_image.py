"""The evaluate stage's per-image values as the paired ``(seeds, images)`` tables the
two-stage bootstrap resamples (``gap_study.report.bootstrap``, ``docs/study.md``,
"Statistics and verdicts").

A metric has per-image values when the evaluate stage wrote them (``per_image.npz``: one value
per test image, or per object on the two-object canvases, whose mean is the metric in
``metrics.csv``), or when it is made of such values:

- ``<metric>_recognised``: ``<metric>`` on the objects the head recognises alone, a weighted
  mean with ``recognised_two_objects`` as the weights (1 for a recognised object, else 0).
  Against another head it is taken on the objects both recognise (``pair``): each head's
  own objects would be two sets, and no pairing by object;
- ``overfit_gap`` and ``loss_gap``: the run's training accuracy (loss) minus each test image's
  (each test image's minus the run's training loss): the training side is one number per run,
  so the interval counts the test images' variation and not the training images'.

Every table is checked against the run's metric in ``results``: a mean that differs from it
means that the per-image file and ``metrics.csv`` come from different runs, and is an error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from gap_study.pipeline.paths import Layout, RunId

__all__ = ["MIN_SHARED_OBJECTS", "ImageTables", "PerImageValues", "is_recognised"]

RECOGNISED = "recognised_two_objects"
# A seed whose two runs share fewer recognised objects has no paired difference here: the
# bootstrap resamples the seed's objects, and with k of them among n a resample draws none
# with probability (1 - k/n)^n < e^-k, under 1e-4 over 10,000 resamples from k = 20 on.
MIN_SHARED_OBJECTS = 20
_RECOGNISED_SUFFIX = "_recognised"
# metrics made of a run-level training value and the per-image test values:
# name -> (training column, per-image test metric, sign of the test side)
_GAPS = {"overfit_gap": ("train_accuracy", "test_accuracy", -1.0),
         "loss_gap": ("train_loss", "test_loss", 1.0)}
# relative tolerance of a table's mean against ``metrics.csv``: float32 losses summed in
# another order agree to about 1e-7
_MEAN_RTOL, _MEAN_ATOL = 1e-5, 1e-7


@dataclass(frozen=True)
class ImageTables:
    """Two sides' ``(seeds, images)`` values on the same images, rows in the same seed order
    (``seeds``), and their weights for a weighted-mean metric (``None``: a plain mean)."""

    head: np.ndarray
    baseline: np.ndarray
    head_weights: np.ndarray | None = None
    baseline_weights: np.ndarray | None = None
    seeds: tuple[int, ...] = ()

    def seed_means(self) -> tuple[np.ndarray, np.ndarray]:
        """Each side's (weighted) mean per seed: the values the paired t-test compares."""
        return (np.average(self.head, axis=1, weights=self.head_weights),
                np.average(self.baseline, axis=1, weights=self.baseline_weights))


class PerImageValues:
    """Every head's per-image values, keyed ``<run stem>/<metric>`` as in ``per_image.npz``."""

    def __init__(self, values: Mapping[str, Mapping[str, np.ndarray]]) -> None:
        self._values = values

    @classmethod
    def read(cls, layout: Layout, heads: Sequence[str]) -> PerImageValues:
        """The evaluate stage's ``per_image.npz`` of each head in ``heads`` that has one."""
        values = {}
        for head in heads:
            path = layout.per_image(head)
            if path.exists():
                with np.load(path, allow_pickle=False) as npz:
                    values[head] = {key: npz[key] for key in npz.files}
        return cls(values)

    def pair(self, runs: pd.DataFrame, head: str, baseline: str, metric: str,
             seeds: Sequence[int]) -> ImageTables | None:
        """The tables of ``head`` and ``baseline`` (a head, or ``ref:<column>`` for a reference
        scored on the head's own images) on ``metric`` over ``seeds``, from ``runs`` (one
        setting's rows of ``results``: one row per head and seed); ``None`` when a side has no
        per-image values for some seed, or, for two heads on recognised objects, when no seed
        has enough objects that both recognise.

        1. Two heads on a ``_recognised`` metric: both sides weighted by the objects both
           recognise (the product of their weights), so that each object's pair is the same
           object; a seed whose runs share fewer than ``MIN_SHARED_OBJECTS`` recognised
           objects is left out (``ImageTables.seeds``; the comparison's pairs show it). The
           heads' own means (``metrics.csv``) stand in the per-head tables.
        """
        ours = self._side(runs, head, metric, seeds)
        if ours is None:
            return None
        if baseline.startswith("ref:"):
            theirs = self._side(runs, head, baseline.removeprefix("ref:"), seeds)
        else:
            theirs = self._side(runs, baseline, metric, seeds)
        if theirs is None:
            return None
        if ours[0].shape != theirs[0].shape:
            raise ValueError(f"{head} and {baseline} have per-image values of {metric} on "
                             f"different images: shapes {ours[0].shape} and {theirs[0].shape}")
        if is_recognised(metric) and not baseline.startswith("ref:"):
            both = ours[1] * theirs[1]
            kept = both.sum(axis=1) >= MIN_SHARED_OBJECTS
            return ImageTables(ours[0][kept], theirs[0][kept], both[kept], both[kept],
                               seeds=tuple(np.asarray(seeds)[kept].tolist())) \
                if kept.any() else None
        return ImageTables(ours[0], theirs[0], ours[1], theirs[1], seeds=tuple(seeds))

    def _side(self, runs: pd.DataFrame, head: str, metric: str,
              seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """One side's ``(values, weights)`` over ``seeds``, each row checked against the run's
        ``metric`` in ``runs``; ``None`` when some seed has none."""
        rows = runs[runs["head"] == head].set_index("seed")
        values, weights = [], []
        for seed in seeds:
            if seed not in rows.index:
                return None
            found = self._run_values(head, rows.loc[seed], metric)
            if found is None:
                return None
            values.append(found[0])
            weights.append(found[1])
        if any(w is None for w in weights):
            return np.stack(values), None
        return np.stack(values), np.stack(weights)

    def _run_values(self, head: str, row: pd.Series,
                    metric: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """One run's per-image values of ``metric`` and their weights, or ``None``; the values
        stored are checked against the metric they average to in ``row``."""
        stored = self._values.get(head, {})
        stem = RunId(float(row["fraction"]), int(row["train_shift"]), int(row.name)).stem

        def checked(name: str, weights: np.ndarray | None = None) -> np.ndarray:
            values = stored[f"{stem}/{name}"].astype(np.float64)
            _check_mean(values, weights, float(row[metric if weights is not None else name]),
                        head, stem, metric if weights is not None else name)
            return values

        if f"{stem}/{metric}" in stored:
            return checked(metric), None
        base = metric.removesuffix(_RECOGNISED_SUFFIX)
        if base != metric and {f"{stem}/{base}", f"{stem}/{RECOGNISED}"} <= stored.keys():
            weights = stored[f"{stem}/{RECOGNISED}"].astype(np.float64)
            return checked(base, weights), weights
        if metric in _GAPS:
            train, test, sign = _GAPS[metric]
            if f"{stem}/{test}" in stored and np.isfinite(row.get(train, np.nan)):
                # checked on the test side: the gap is a small difference of two larger
                # numbers, whose rounding no tolerance on the gap itself fits
                return sign * (checked(test) - float(row[train])), None
        return None


def is_recognised(metric: str) -> bool:
    """Whether ``metric`` is taken on the objects a head recognises (``<metric>_recognised``)."""
    return metric.endswith(_RECOGNISED_SUFFIX)


def _check_mean(values: np.ndarray, weights: np.ndarray | None, expected: float, head: str,
                run: str, metric: str) -> None:
    """Refuse per-image values whose (weighted) mean is not the run's metric."""
    mean = float(np.average(values, weights=weights)) if weights is None or weights.sum() \
        else float("nan")
    if not np.isclose(mean, expected, rtol=_MEAN_RTOL, atol=_MEAN_ATOL, equal_nan=True):
        raise ValueError(
            f"{head}'s per-image values of {metric} for run {run} average {mean!r}, but its "
            f"metrics.csv says {expected!r}: the evaluate stage's per_image.npz and "
            "metrics.csv come from different runs. Fix: dvc repro -f -s evaluate")
