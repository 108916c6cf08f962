"""Intervals over seeds (``docs/study.md``, "Statistics and verdicts"): the Student-t interval
of a mean, the Welch-t interval of a difference of means, and the tidy per-group summary."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["summarize", "t_interval", "welch_interval"]


def t_interval(values: Sequence[float] | np.ndarray,
               confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; ``(nan, nan)`` with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    mean, sem = x.mean(), x.std(ddof=1) / math.sqrt(len(x))
    half = stats.t.ppf((1 + confidence) / 2, len(x) - 1) * sem
    return float(mean - half), float(mean + half)


def welch_interval(a: Sequence[float], b: Sequence[float],
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its Welch-t confidence interval.

    When both samples have zero spread (e.g. parameter counts) the difference is exact and the
    interval collapses to it; with fewer than two values on a side the interval is ``nan``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf((1 + confidence) / 2, dof) * se
    return diff, diff - half, diff + half


def summarize(frame: pd.DataFrame, by: str | list[str], metrics: Sequence[str],
              confidence: float = 0.95) -> pd.DataFrame:
    """Tidy aggregate over seeds: one row per group and metric with
    ``n, mean, std, ci_low, ci_high``."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for keys, group in frame.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float)
            low, high = t_interval(values, confidence)
            rows.append({**dict(zip(by, keys, strict=True)), "metric": metric,
                         "n": len(values), "mean": values.mean(),
                         "std": values.std(ddof=1) if len(values) > 1 else math.nan,
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)
