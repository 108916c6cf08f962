"""Global pooling: functional ops on ``(N, C, H, W)`` maps plus thin ``nn.Module`` wrappers.

Each op reduces the spatial dimensions of a feature map and returns ``(N, C)``
(or ``(N, C, 1, 1)`` with ``flatten=False``). They are written as plain tensor
reductions (``mean``/``amax``/``sum`` over the last two dims) rather than
``adaptive_*_pool2d``: the values are the same, the reductions work on any memory
layout, and their backward passes are deterministic on CUDA, where
``adaptive_avg_pool2d``/``adaptive_max_pool2d`` backward raise under
``torch.use_deterministic_algorithms(True)``.

The registry ``GLOBAL_POOLS`` is keyed by head name (see STUDY.md, "Heads").
"""

from __future__ import annotations

from collections.abc import Callable

from torch import Tensor, nn

__all__ = [
    "GLOBAL_POOLS",
    "GlobalPool2d",
    "get_global_pool",
    "global_avg_pool",
    "global_max_pool",
    "global_sum_pool",
]


def _check_4d(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"global pooling expects (N, C, H, W), got shape {tuple(x.shape)}")


def global_avg_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """Mean over ``H, W``: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` if not ``flatten``."""
    _check_4d(x)
    return x.mean(dim=(2, 3), keepdim=not flatten)


def global_max_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """Max over ``H, W``: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` if not ``flatten``.

    Where several positions tie for the maximum, the gradient is split evenly among them
    (``amax`` semantics); ``adaptive_max_pool2d`` gives it all to one of them.
    """
    _check_4d(x)
    return x.amax(dim=(2, 3), keepdim=not flatten)


def global_sum_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """Sum over ``H, W`` (GAP times ``H * W``): ``(N, C, H, W) -> (N, C)``.

    The write-up's "treated as a sum in the paper": identical to GAP up to the constant
    factor ``H * W``, which scales the next layer's inputs and so its effective learning rate.
    """
    _check_4d(x)
    return x.sum(dim=(2, 3), keepdim=not flatten)


PoolFn = Callable[..., Tensor]

GLOBAL_POOLS: dict[str, PoolFn] = {
    "gap": global_avg_pool,
    "gmp": global_max_pool,
    "gsp": global_sum_pool,
}


def get_global_pool(pool_type: str) -> PoolFn:
    """The functional op of a head name in ``GLOBAL_POOLS``: ``"gap"``, ``"gmp"`` or ``"gsp"``."""
    try:
        return GLOBAL_POOLS[pool_type]
    except KeyError:
        allowed = ", ".join(sorted(GLOBAL_POOLS))
        raise ValueError(f"unknown global pool {pool_type!r}; allowed: {allowed}") from None


class GlobalPool2d(nn.Module):
    """``nn.Module`` wrapper selecting a global pooling op by name.

    Input ``(N, C, H, W)``; output ``(N, C)`` (``flatten=True``) or ``(N, C, 1, 1)``.
    No parameters.
    """

    def __init__(self, pool_type: str = "gap", flatten: bool = True) -> None:
        super().__init__()
        self.pool_type = pool_type
        self.flatten = flatten
        self._pool = get_global_pool(pool_type)

    def forward(self, x: Tensor) -> Tensor:
        return self._pool(x, flatten=self.flatten)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}, flatten={self.flatten}"

