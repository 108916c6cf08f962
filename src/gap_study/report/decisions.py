"""The verdicts of the study's comparisons (``docs/study.md``, section
"Statistics and verdicts"): ``better``, ``worse``, ``equivalent`` or ``inconclusive``, from
p-values adjusted within a family.

- **Multiplicity.** Each claim's primary metrics form one family, adjusted by Holm (family-wise
  error); secondary metrics get Benjamini-Hochberg q-values (false discovery rate). Difference
  and equivalence p-values are adjusted as two separate families of the same tests
  (``judge_family``); ``verdict`` only ever reads adjusted values.
- **One decision rule, and the intervals it uses** (Lakens 2017). A row is ``equivalent``
  when its adjusted equivalence test rejects, that is when its adjusted ``1 - 2 alpha``
  interval lies inside the margin, even if that interval excludes zero (a real difference
  smaller than the margin: ``trivial`` marks it); ``better`` or ``worse`` when it is not
  equivalent and the adjusted difference test rejects, that is when its adjusted ``1 - alpha``
  interval excludes zero; ``inconclusive`` otherwise. Each adjusted interval is taken at the
  row's own adjusted level ``alpha' = alpha * p / p_adjusted`` of its family (the level at
  which its raw p-value decides as the adjusted one does at ``alpha``), so the two intervals
  shown beside a verdict are the ones it read: the equivalence interval (``adjusted_low``,
  ``adjusted_high``) and the wider difference interval (``difference_low``,
  ``difference_high``), as in Lakens' plots of a 90% and a 95% interval.
"""

from __future__ import annotations

import gc
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from statsmodels.stats.multitest import multipletests

from gap_study.report.comparisons import Comparison, interval_at

__all__ = ["bh_q_values", "holm", "judge_family", "verdict"]


def _decide(improvement: float, exact: bool, p_difference: float, p_equivalence: float,
            alpha: float) -> str:
    """The verdict rule of ``verdict``, on plain values (nan p-values never reject)."""
    if exact:
        if improvement > 0:
            return "better"
        return "worse" if improvement < 0 else "equivalent"
    # 1. inside the margin is equivalent, even where the difference test also rejects: a
    #    difference smaller than the margin is too small to matter (a "trivial" one)
    if p_equivalence < alpha:
        return "equivalent"
    if p_difference < alpha and improvement > 0:
        return "better"
    if p_difference < alpha and improvement < 0:
        return "worse"
    return "inconclusive"


def verdict(comparison: Comparison, p_difference: float, p_equivalence: float,
            alpha: float = 0.05) -> str:
    """``better``/``worse``/``equivalent``/``inconclusive`` from already ADJUSTED p-values.

    Equivalence (the adjusted interval inside the margin) wins over a significant difference;
    an exact comparison is judged by its sign.
    """
    return _decide(comparison.improvement, comparison.exact, p_difference, p_equivalence, alpha)


def _adjust(p_values: Sequence[float], method: str) -> np.ndarray:
    """``multipletests`` over the finite entries only; nan entries stay nan."""
    p = np.asarray(p_values, dtype=float).ravel()
    out = np.full(p.shape, np.nan)
    keep = ~np.isnan(p)
    if keep.any():
        with _objects_alive_frozen():
            out[keep] = multipletests(p[keep], method=method)[1]
    return out


@contextmanager
def _objects_alive_frozen() -> Iterator[None]:
    """statsmodels' Holm runs ``gc.collect()`` on every call: a full pass over every object
    alive (0.17 s in the report's kernel, torch and pandas loaded; half the time of the
    report's tests). Frozen objects are left out of that pass, and thawed after it. A process
    that froze its own objects before (say, to share pages with forked children) is left as
    it is, since ``gc.unfreeze`` would thaw those too."""
    if gc.get_freeze_count():
        yield
        return
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values; nan entries are left nan and are not part of the family."""
    return _adjust(p_values, "holm")


def bh_q_values(p_values: Sequence[float]) -> np.ndarray:
    """Benjamini-Hochberg q-values; nan entries are left nan and are not part of the family."""
    return _adjust(p_values, "fdr_bh")


_ADJUSTERS = {"holm": holm, "bh": bh_q_values}


def judge_family(comparisons: pd.DataFrame, *, adjust: str, alpha: float = 0.05) -> pd.DataFrame:
    """The frame's rows as ONE family: adjusted p-values (``"holm"`` or ``"bh"``), the
    adjusted intervals the verdicts read (equivalence: ``adjusted_low``, ``adjusted_high``;
    difference: ``difference_low``, ``difference_high``; the frame needs ``lower_is_better``
    and ``relative`` columns) and verdicts, with ``trivial`` marking an equivalent row whose
    adjusted difference test also rejects.

    Difference and equivalence p-values are adjusted separately; exact rows are left out of
    both families (their adjusted values are nan) and keep their exact verdict. A measured row
    without a p-value (a comparison the data could not make, or of a single pair) stays in
    its family as an untested hypothesis, p = 1: it never rejects, and the family's other
    tests still pay for it, as they would have had it been made. Its adjusted values are nan.
    """
    if adjust not in _ADJUSTERS:
        raise ValueError(f"adjust must be one of {sorted(_ADJUSTERS)}, got {adjust!r}")
    out = comparisons.copy()
    exact = out["exact"].astype(bool).to_numpy()
    for column in ("p_difference", "p_equivalence"):
        p = out[column].to_numpy(dtype=float)
        untested = ~exact & np.isnan(p)
        adjusted = _ADJUSTERS[adjust](np.where(exact, np.nan, np.where(untested, 1.0, p)))
        out[f"{column}_adjusted"] = np.where(untested, np.nan, adjusted)
    out["verdict"] = [
        _decide(float(imp), bool(ex), float(p_d), float(p_e), alpha)
        for imp, ex, p_d, p_e in zip(out["improvement"], exact, out["p_difference_adjusted"],
                                    out["p_equivalence_adjusted"], strict=True)
    ]
    for prefix, column, tails in (("adjusted", "p_equivalence", 1),
                                  ("difference", "p_difference", 2)):
        ends = [_adjusted_interval(row, alpha, column, tails) for row in out.itertuples()]
        out[f"{prefix}_low"] = [low for low, _ in ends]
        out[f"{prefix}_high"] = [high for _, high in ends]
    out["trivial"] = ((out["verdict"] == "equivalent") & ~exact
                      & (out["p_difference_adjusted"] < alpha))
    return out


def _adjusted_interval(row: object, alpha: float, column: str,
                       tails: int) -> tuple[float, float]:
    """The row's interval at its adjusted level ``alpha' = alpha * p / p_adjusted`` of the
    p-values in ``column``: for the equivalence test (one tail each side, ``tails=1``) the
    ``1 - 2 alpha'`` interval, inside the margin exactly when the adjusted TOST rejects; for
    the difference test (``tails=2``) the ``1 - alpha'`` interval, which excludes zero exactly
    when the adjusted two-sided test rejects. An exact row's interval is its value."""
    if row.exact:
        return float(row.improvement), float(row.improvement)
    p, adjusted = float(getattr(row, column)), float(getattr(row, f"{column}_adjusted"))
    tail = alpha * p / adjusted / tails if math.isfinite(p) and adjusted > 0 else math.nan
    return interval_at(row, tail, lower_is_better=bool(row.lower_is_better),
                       relative=bool(row.relative))
