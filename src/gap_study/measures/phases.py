"""Whole-cell and other shifts of the shift grid (``docs/study.md``, "Metrics"): global
pooling after a backbone of total stride ``s`` sees a shift by a multiple of ``s`` as the same
map moved by whole cells, and any other shift as a different map. Pandas only, so that the
report can use it without torch."""

from __future__ import annotations

import pandas as pd

__all__ = ["phase_split", "whole_cell_shifts"]


def whole_cell_shifts(grid: pd.DataFrame, stride: int) -> pd.Series:
    """For each non-zero offset of ``grid``: whether it moves the object by whole feature-map
    cells (``dx`` and ``dy`` multiples of the backbone's total ``stride``). The centre is left
    out: it is no shift."""
    moved = grid[(grid.dx != 0) | (grid.dy != 0)]
    return (moved.dx % stride == 0) & (moved.dy % stride == 0)


def phase_split(grid: pd.DataFrame, stride: int) -> dict[str, float]:
    """One run's mean accuracy at the whole-cell shifts (``aligned_shift_accuracy``) and at
    every other non-zero shift (``other_shift_accuracy``) of its ``grid_accuracy``."""
    aligned = whole_cell_shifts(grid, stride)
    moved = grid.loc[aligned.index, "accuracy"]
    return {"aligned_shift_accuracy": float(moved[aligned].mean()),
            "other_shift_accuracy": float(moved[~aligned].mean())}
