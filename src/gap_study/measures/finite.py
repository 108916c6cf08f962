"""A metric computed from non-finite losses or logits is an error naming the run, never a
number in a table: NaN sorts, averages and prints like any other value."""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import torch

__all__ = ["NonFiniteError", "require_finite"]


class NonFiniteError(ArithmeticError):
    """A run's loss or logits hold NaN or infinity."""


def _finite(value: object) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    if isinstance(value, np.ndarray):
        return bool(np.isfinite(value).all())
    return math.isfinite(float(value))  # type: ignore[arg-type]


def require_finite(values: Mapping[str, object], run: str) -> None:
    """Raise ``NonFiniteError`` naming ``run`` and each of ``values`` (numbers, arrays or
    tensors, by name) that holds NaN or infinity."""
    bad = [name for name, value in values.items() if not _finite(value)]
    if bad:
        raise NonFiniteError(
            f"run {run}: {', '.join(bad)} not finite (NaN or infinity): its weights are damaged "
            "or its training diverged; check its checkpoint and training history, and train "
            "it again (a lower learning rate if it diverged)")
