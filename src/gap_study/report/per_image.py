"""The evaluate stage's per-image values as the paired ``(seeds, images)`` tables the
two-stage bootstrap resamples (``gap_study.report.bootstrap``, ``docs/study.md``,
"Statistics and verdicts").

A metric has per-image values when the evaluate stage wrote them (``per_image.npz``: one value
per test image, or per object on the two-object canvases, whose mean is the metric in
``metrics.csv``), or when it is made of such values:

- ``<metric>_recognised``: ``<metric>`` on the objects the head recognises alone, a weighted
  mean with ``recognised_two_objects`` as the weights (1 for a recognised object, else 0);
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

__all__ = ["ImageTables", "PerImageValues"]

RECOGNISED = "recognised_two_objects"
# metrics made of a run-level training value and the per-image test values:
# name -> (training column, per-image test metric, sign of the test side)
_GAPS = {"overfit_gap": ("train_accuracy", "test_accuracy", -1.0),
         "loss_gap": ("train_loss", "test_loss", 1.0)}
# relative tolerance of a table's mean against ``metrics.csv``: float32 losses summed in
# another order agree to about 1e-7
_MEAN_RTOL, _MEAN_ATOL = 1e-5, 1e-7


@dataclass(frozen=True)
class ImageTables:
    """Two sides' ``(seeds, images)`` values on the same images, rows in the same seed order,
    and their weights for a weighted-mean metric (``None``: a plain mean)."""

    head: np.ndarray
    baseline: np.ndarray
    head_weights: np.ndarray | None = None
    baseline_weights: np.ndarray | None = None


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
        per-image values for some seed."""
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
        return ImageTables(ours[0], theirs[0], ours[1], theirs[1])

    def _side(self, runs: pd.DataFrame, head: str, metric: str,
              seeds: Sequence[int]) -> tuple[np.ndarray, np.ndarray | None] | None:
        """One side's ``(values, weights)`` over ``seeds``, each row checked against the run's
        ``metric`` in ``runs``; ``None`` when some seed has none."""
        rows = runs[runs["head"] == head].set_index("seed")
        values, weights = [], []
        for seed in seeds:
            if seed not in rows.index:
                return None
            row = rows.loc[seed]
            found = self._run_values(head, row, metric)
            if found is None:
                return None
            _check_mean(found, float(row[metric]), head, RunId(float(row["fraction"]),
                        int(row["train_shift"]), int(seed)).stem, metric)
            values.append(found[0])
            weights.append(found[1])
        if any(w is None for w in weights):
            return np.stack(values), None
        return np.stack(values), np.stack(weights)

    def _run_values(self, head: str, row: pd.Series,
                    metric: str) -> tuple[np.ndarray, np.ndarray | None] | None:
        """One run's per-image values of ``metric`` and their weights, or ``None``."""
        stored = self._values.get(head, {})
        stem = RunId(float(row["fraction"]), int(row["train_shift"]), int(row.name)).stem
        if f"{stem}/{metric}" in stored:
            return stored[f"{stem}/{metric}"].astype(np.float64), None
        base = metric.removesuffix("_recognised")
        if base != metric and {f"{stem}/{base}", f"{stem}/{RECOGNISED}"} <= stored.keys():
            return (stored[f"{stem}/{base}"].astype(np.float64),
                    stored[f"{stem}/{RECOGNISED}"].astype(np.float64))
        if metric in _GAPS:
            train, test, sign = _GAPS[metric]
            if f"{stem}/{test}" in stored and np.isfinite(row.get(train, np.nan)):
                return sign * (stored[f"{stem}/{test}"].astype(np.float64)
                               - float(row[train])), None
        return None


def _check_mean(found: tuple[np.ndarray, np.ndarray | None], expected: float, head: str,
                run: str, metric: str) -> None:
    """Refuse per-image values whose (weighted) mean is not the run's metric."""
    values, weights = found
    mean = float(np.average(values, weights=weights)) if weights is None or weights.sum() \
        else float("nan")
    if not np.isclose(mean, expected, rtol=_MEAN_RTOL, atol=_MEAN_ATOL, equal_nan=True):
        raise ValueError(
            f"{head}'s per-image values of {metric} for run {run} average {mean!r}, but its "
            f"metrics.csv says {expected!r}: the evaluate stage's per_image.npz and "
            "metrics.csv come from different runs. Fix: dvc repro -f -s evaluate")
