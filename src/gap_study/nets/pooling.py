"""Global pooling: functional ops on ``(N, C, H, W)`` maps and one small module per op.

Each op reduces the spatial dimensions of a feature map and returns ``(N, C)`` (or
``(N, C, 1, 1)`` with ``flatten=False``). They are plain tensor reductions (``mean``, ``amax``,
``sum`` over the last two dims) rather than ``adaptive_*_pool2d``: the values are the same,
they work on any memory layout, and their backward passes are deterministic on CUDA, where
``adaptive_max_pool2d``'s backward raises under ``torch.use_deterministic_algorithms(True)``
(and gives a tied maximum's whole gradient to one position). Where one of torch's own forms
computes the same values faster, the op calls it; ``benchmarks/bench_pooling.py`` times every
op against torch's forms, and ``benchmarks/README.md`` has the measurements behind each choice.

``GLOBAL_POOLS`` maps each pooling head's name (``docs/study.md``, "Heads") to its module;
a module's ``feat_mult()`` says how many features it gives per input channel.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GLOBAL_POOLS",
    "GeMPool",
    "GlobalAvgMaxPool",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GlobalPool",
    "GlobalSumPool",
    "LSEPool",
    "global_avg_pool",
    "global_avgmax_pool",
    "global_gem_pool",
    "global_lse_pool",
    "global_max_pool",
    "global_sum_pool",
    "make_global_pool",
    "sum_vs_average",
]


def _check_4d(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"global pooling expects (N, C, H, W), got shape {tuple(x.shape)}")


# On a channels_last CPU map without gradient, torch's pooling kernels (which run along the
# contiguous C) beat a reduction over (2, 3) from this many channels (avg_pool2d), and from
# maps larger than a CPU's last-level cache (max_pool2d). The byte threshold stands for a
# typical cache size. Measurements: benchmarks/README.md, "Pooling thresholds".
AVG_POOL2D_MIN_CHANNELS = 256
MAX_POOL2D_MIN_BYTES = 32 * 2**20


def _is_channels_last_cpu_inference(x: Tensor) -> bool:
    """A channels_last (and not also contiguous) CPU map that needs no gradient."""
    return (x.device.type == "cpu" and not (x.requires_grad and torch.is_grad_enabled())
            and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last))


def global_avg_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """Mean over ``H, W``: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` if not ``flatten``."""
    _check_4d(x)
    if x.shape[1] >= AVG_POOL2D_MIN_CHANNELS and _is_channels_last_cpu_inference(x):
        pooled = F.avg_pool2d(x, x.shape[2:])  # the same mean, summed in another order
        return pooled.flatten(1) if flatten else pooled
    return x.mean(dim=(2, 3), keepdim=not flatten)


def global_max_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """Max over ``H, W``: ``(N, C, H, W) -> (N, C)``, or ``(N, C, 1, 1)`` if not ``flatten``.

    Where several positions tie for the maximum, the gradient is split evenly among them
    (``amax`` semantics); ``adaptive_max_pool2d`` gives it all to one of them.
    """
    _check_4d(x)
    if x.device.type == "cpu" and x.requires_grad and torch.is_grad_enabled():
        pooled = _GlobalMax.apply(x)
    elif (x.numel() * x.element_size() >= MAX_POOL2D_MIN_BYTES
          and _is_channels_last_cpu_inference(x)):
        pooled = F.max_pool2d(x, x.shape[2:])  # exactly amax's values, NaN included
    else:
        return x.amax(dim=(2, 3), keepdim=not flatten)
    return pooled.flatten(1) if flatten else pooled


class _GlobalMax(torch.autograd.Function):
    """``amax`` over ``H, W`` (kept as ``1 x 1``) with a faster backward giving the same gradient.

    Autograd's ``amax`` backward compares into a boolean mask, then converts it twice (to a
    count of the ties, then to scale the gradient); comparing straight into a float mask does
    the same arithmetic, ``mask * (grad / count)``, in fewer passes over the map. CPU only: on
    CUDA, at the study's sizes, launching kernels dominates, and autograd's own backward
    launches fewer than a Python ``Function``.
    """

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        pooled = x.amax(dim=(2, 3), keepdim=True)
        ctx.save_for_backward(x, pooled)
        return pooled

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        x, pooled = ctx.saved_tensors
        mask = torch.eq(x, pooled, out=torch.empty_like(x, dtype=grad.dtype))  # 1 at each max
        return mask.mul_(grad / mask.sum(dim=(2, 3), keepdim=True))


def global_sum_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """Sum over ``H, W`` (GAP times ``H * W``): ``(N, C, H, W) -> (N, C)``.

    The write-up's "treated as a sum in the paper" (``docs/study.md``, "Heads"): GAP up to the
    constant factor ``H * W``, which scales the next layer's inputs and so its effective
    learning rate.
    """
    _check_4d(x)
    return x.sum(dim=(2, 3), keepdim=not flatten)


def global_gem_pool(x: Tensor, p: Tensor | float = 3.0, eps: float = 1e-6,
                    flatten: bool = True) -> Tensor:
    """Generalized mean ``(mean(clamp(x, eps)^p))^(1/p)`` over ``H, W`` (Radenovic et al. 2018).

    ``(N, C, H, W) -> (N, C)``. ``p = 1`` is GAP of the clamped map; ``p -> inf`` tends to GMP.
    ``p`` may be a tensor (learnable, see ``GeMPool``).
    """
    _check_4d(x)
    return x.clamp(min=eps).pow(p).mean(dim=(2, 3), keepdim=not flatten).pow(1.0 / p)


def global_lse_pool(x: Tensor, r: float = 10.0, flatten: bool = True) -> Tensor:
    """Log-sum-exp ``(1/r) log(mean(exp(r x)))`` over ``H, W`` (Pinheiro & Collobert 2015).

    ``(N, C, H, W) -> (N, C)``. Small ``r`` tends to GAP, large ``r`` to GMP. Computed with
    ``logsumexp`` so large ``r * x`` does not overflow.
    """
    _check_4d(x)
    h, w = x.shape[2:]
    if r > 0 and not (x.requires_grad and torch.is_grad_enabled()):
        pooled = _lse_without_grad(x, r)
    else:  # logsumexp's own backward is the fastest way to the gradient
        pooled = (torch.logsumexp(r * x, dim=(2, 3)) - math.log(h * w)) / r
    return pooled if flatten else pooled[:, :, None, None]


def _lse_without_grad(x: Tensor, r: float) -> Tensor:
    """``global_lse_pool`` for ``r > 0`` where no gradient is needed, in one temporary:
    ``m + log(mean(exp(r (x - m)))) / r`` with ``m`` the map's maximum, as ``logsumexp`` shifts
    (an infinite ``m`` is taken as 0, as there): fewer passes over the map than
    ``logsumexp``, the same value up to rounding."""
    m = x.amax(dim=(2, 3), keepdim=True).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return (x - m).mul_(r).exp_().mean(dim=(2, 3)).log_().div_(r).add_(m.flatten(1))


def global_avgmax_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """GAP and GMP concatenated along channels (timm's ``catavgmax``): ``(N, 2C)``."""
    return torch.cat([global_avg_pool(x, flatten), global_max_pool(x, flatten)], dim=1)


class GlobalPool(nn.Module):
    """Base of the global pooling modules: ``(N, C, H, W) -> (N, C * feat_mult())``, or
    ``(N, C * feat_mult(), 1, 1)`` without ``flatten``."""

    def __init__(self, flatten: bool = True) -> None:
        super().__init__()
        self.flatten = flatten

    def feat_mult(self) -> int:
        """Features per channel of the input map."""
        return 1

    def extra_repr(self) -> str:
        return f"flatten={self.flatten}"


class GlobalAvgPool(GlobalPool):
    """Mean over ``H, W``."""

    def forward(self, x: Tensor) -> Tensor:
        return global_avg_pool(x, self.flatten)


class GlobalMaxPool(GlobalPool):
    """Maximum over ``H, W``."""

    def forward(self, x: Tensor) -> Tensor:
        return global_max_pool(x, self.flatten)


class GlobalSumPool(GlobalPool):
    """Sum over ``H, W``."""

    def forward(self, x: Tensor) -> Tensor:
        return global_sum_pool(x, self.flatten)


class GeMPool(GlobalPool):
    """Generalized mean with one learnable exponent ``p`` (one trainable parameter)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, flatten: bool = True) -> None:
        super().__init__(flatten)
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return global_gem_pool(x, self.p, self.eps, self.flatten)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4g}, eps={self.eps}, flatten={self.flatten}"


class LSEPool(GlobalPool):
    """Log-sum-exp pooling with temperature ``r``."""

    def __init__(self, r: float = 10.0, flatten: bool = True) -> None:
        super().__init__(flatten)
        self.r = r

    def forward(self, x: Tensor) -> Tensor:
        return global_lse_pool(x, self.r, self.flatten)

    def extra_repr(self) -> str:
        return f"r={self.r}, flatten={self.flatten}"


class GlobalAvgMaxPool(GlobalPool):
    """Mean and maximum over ``H, W``, concatenated along channels."""

    def forward(self, x: Tensor) -> Tensor:
        return global_avgmax_pool(x, self.flatten)

    def feat_mult(self) -> int:
        return 2


# The pooling module of each pooling head, keyed by head name
# (gap_study.nets.architecture.POOLED_HEAD_NAMES, in the same order).
GLOBAL_POOLS: dict[str, type[GlobalPool]] = {
    "gap": GlobalAvgPool,
    "gmp": GlobalMaxPool,
    "gsp": GlobalSumPool,
    "gem": GeMPool,
    "lse": LSEPool,
    "avgmax": GlobalAvgMaxPool,
}


def make_global_pool(pool_type: str, *, gem_p: float = 3.0, lse_r: float = 10.0) -> GlobalPool:
    """The pooling module of a head name in ``GLOBAL_POOLS``: ``gem``'s learnable exponent
    starts at ``gem_p``, ``lse`` has temperature ``lse_r``."""
    try:
        pool_class = GLOBAL_POOLS[pool_type]
    except KeyError:
        allowed = ", ".join(sorted(GLOBAL_POOLS))
        raise ValueError(f"unknown global pool {pool_type!r}; allowed: {allowed}") from None
    options = {GeMPool: {"p": gem_p}, LSEPool: {"r": lse_r}}.get(pool_class, {})
    return pool_class(**options)


def sum_vs_average(side: int, channels: int, seed: int = 0) -> dict[str, float]:
    """Global sum and average pooling of a random ``(8, channels, side, side)`` float32 map:
    the factor ``side * side``, the mean ratio sum / average, and the ratio's largest
    relative deviation from the factor (float rounding)."""
    maps = torch.randn(8, channels, side, side, generator=torch.Generator().manual_seed(seed))
    ratio = global_sum_pool(maps) / global_avg_pool(maps)
    return {"factor": float(side * side), "ratio_mean": float(ratio.mean()),
            "max_relative_deviation": float((ratio / (side * side) - 1).abs().max())}
