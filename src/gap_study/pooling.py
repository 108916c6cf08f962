"""Global pooling: functional ops on ``(N, C, H, W)`` maps plus thin ``nn.Module`` wrappers.

Each op reduces the spatial dimensions of a feature map and returns ``(N, C)``
(or ``(N, C, 1, 1)`` with ``flatten=False``). They are written as plain tensor
reductions (``mean``/``amax``/``sum`` over the last two dims) rather than
``adaptive_*_pool2d``: the values are the same, the reductions work on any memory
layout, and their backward passes are deterministic on CUDA, where
``adaptive_max_pool2d`` backward raises under ``torch.use_deterministic_algorithms(True)``
(and gives a tied maximum's whole gradient to one position). Where one of torch's forms is
clearly faster for the same values (large channels_last maps on CPU, without gradient) the op
calls it. ``benchmarks/bench_pooling.py`` times each op against torch's own forms.

The registry ``GLOBAL_POOLS`` is keyed by head name (see STUDY.md, "Heads"; the names are
``gap_study.heads.POOLED_HEAD_NAMES``);
``make_global_pool`` builds the module for a name, ``pooled_channels`` says how many
features it gives per map channel.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GLOBAL_POOLS",
    "GeMPool2d",
    "GlobalPool2d",
    "get_global_pool",
    "global_avg_pool",
    "global_avgmax_pool",
    "global_gem_pool",
    "global_lse_pool",
    "global_max_pool",
    "global_sum_pool",
    "make_global_pool",
    "pooled_channels",
]


def _check_4d(x: Tensor) -> None:
    if x.ndim != 4:
        raise ValueError(f"global pooling expects (N, C, H, W), got shape {tuple(x.shape)}")


# Above these sizes torch's pooling kernels, which run along channels_last's contiguous C, beat
# a reduction over (2, 3) of a channels_last map on CPU. Timed on the development machine
# (2-core AMD EPYC, 32 MiB L3) on maps from 128x256x4x4 to 256x2048x7x7: from 256 channels
# avg_pool2d takes 0.46-0.84x the time of mean; max_pool2d takes 1.0-1.4x amax's time while
# the map fits in the cache and 0.5x beyond 40 MB. The byte threshold follows the cache size,
# so it is machine-dependent; benchmarks/bench_pooling.py checks the 256x2048x7x7 case.
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
    the same arithmetic, ``mask * (grad / count)``, in fewer passes over the map: 2-4x faster
    forward + backward on CPU (``benchmarks/bench_pooling.py``). Used on CPU only: on CUDA, at
    the study's sizes, the time goes to launching kernels, where autograd's own backward is
    cheaper than a Python ``Function``.
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

    The write-up's "treated as a sum in the paper": identical to GAP up to the constant
    factor ``H * W``, which scales the next layer's inputs and so its effective learning rate.
    """
    _check_4d(x)
    return x.sum(dim=(2, 3), keepdim=not flatten)


def global_gem_pool(x: Tensor, p: Tensor | float = 3.0, eps: float = 1e-6,
                    flatten: bool = True) -> Tensor:
    """Generalized mean ``(mean(clamp(x, eps)^p))^(1/p)`` over ``H, W`` (Radenovic et al. 2018).

    ``(N, C, H, W) -> (N, C)``. ``p = 1`` is GAP of the clamped map; ``p -> inf`` tends to GMP.
    ``p`` may be a tensor (learnable, see ``GeMPool2d``).
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
    (an infinite ``m`` is taken as 0, as there). 5-30% faster than ``logsumexp`` on CPU
    (``benchmarks/bench_pooling.py``), the same value up to rounding."""
    m = x.amax(dim=(2, 3), keepdim=True).nan_to_num_(nan=0.0, posinf=0.0, neginf=0.0)
    return (x - m).mul_(r).exp_().mean(dim=(2, 3)).log_().div_(r).add_(m.flatten(1))


def global_avgmax_pool(x: Tensor, flatten: bool = True) -> Tensor:
    """GAP and GMP concatenated along channels (timm's ``catavgmax``): ``(N, 2C)``."""
    return torch.cat([global_avg_pool(x, flatten), global_max_pool(x, flatten)], dim=1)


PoolFn = Callable[..., Tensor]

GLOBAL_POOLS: dict[str, PoolFn] = {
    "gap": global_avg_pool,
    "gmp": global_max_pool,
    "gsp": global_sum_pool,
    "gem": global_gem_pool,
    "lse": global_lse_pool,
    "avgmax": global_avgmax_pool,
}


def get_global_pool(pool_type: str) -> PoolFn:
    """The functional op of a pooling head name in ``GLOBAL_POOLS`` (``"gap"``, ``"gmp"``, ...)."""
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

    def __init__(self, pool_type: str = "gap", flatten: bool = True, **options: float) -> None:
        super().__init__()
        self.pool_type = pool_type
        self.flatten = flatten
        self.options = options  # e.g. r for "lse"
        self._pool = get_global_pool(pool_type)

    def forward(self, x: Tensor) -> Tensor:
        return self._pool(x, flatten=self.flatten, **self.options)

    def extra_repr(self) -> str:
        options = "".join(f", {k}={v}" for k, v in self.options.items())
        return f"pool_type={self.pool_type!r}, flatten={self.flatten}{options}"


class GeMPool2d(nn.Module):
    """Generalized-mean pooling with a learnable exponent ``p`` (one scalar, as in Radenovic
    et al. 2018). ``(N, C, H, W) -> (N, C)``; one trainable parameter."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6, flatten: bool = True) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps
        self.flatten = flatten

    def forward(self, x: Tensor) -> Tensor:
        return global_gem_pool(x, self.p, self.eps, self.flatten)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4g}, eps={self.eps}, flatten={self.flatten}"


def make_global_pool(pool_type: str, *, gem_p: float = 3.0, lse_r: float = 10.0) -> nn.Module:
    """The pooling module of a head name: ``GeMPool2d`` for ``"gem"`` (learnable ``p``
    starting at ``gem_p``), ``GlobalPool2d`` otherwise (``lse`` with temperature ``lse_r``)."""
    if pool_type == "gem":
        return GeMPool2d(gem_p)
    if pool_type == "lse":
        return GlobalPool2d("lse", r=lse_r)
    return GlobalPool2d(pool_type)


def pooled_channels(pool_type: str, channels: int) -> int:
    """Features the pool gives for a ``channels``-channel map (``avgmax`` doubles them)."""
    get_global_pool(pool_type)
    return 2 * channels if pool_type == "avgmax" else channels

