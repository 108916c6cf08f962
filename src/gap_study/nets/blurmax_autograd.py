"""The CPU kernels of the anti-aliased layers (``gap_study.nets.blurmax_kernel`` and
``aps_kernel``, numba) as autograd functions of torch tensors: ``blurmax``,
``BlurMaxPool2d``'s two steps, and ``adaptive_max``, ``ApsMaxPool2d``'s max with its
sampling. Each hands the kernel a channels_last map as ``(N, H, W * C)`` rows, its padding as
index maps, and returns its output in the input's layout.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache

import numpy as np
import torch
from kornia.filters.kernels import get_pascal_kernel_1d
from torch import Tensor
from torch.autograd.function import once_differentiable

from gap_study.nets.aps_kernel import aps_max_backward
from gap_study.nets.blurmax_kernel import blurmax_backward, blurmax_forward, max_2x2_forward
from gap_study.nets.padding import memory_layout

__all__ = ["Sampler", "adaptive_max", "blurmax", "source_rows"]

# what ApsMaxPool2d does after its max: the map -> (the kept components, each image's index)
Sampler = Callable[[Tensor], tuple[Tensor, Tensor]]


def source_rows(size: int, before: int, after: int, padding: str) -> np.ndarray:
    """For each row of a map of ``size`` rows padded by ``before`` and ``after`` in
    ``padding`` mode: the row of the padded map it copies, or ``-1`` for a zero row."""
    index = np.arange(-before, size + after)
    if padding == "zeros":
        source = np.where((index >= 0) & (index < size), index, -1 - before)
    elif padding == "circular":
        source = np.mod(index, size)
    else:  # reflect: -1 is row 1, size is row size - 2
        index = np.abs(index)
        source = np.where(index >= size, 2 * (size - 1) - index, index)
    return (source + before).astype(np.int64)


@lru_cache(maxsize=64)
def _max_maps(height: int, width: int, padding: str) -> tuple[np.ndarray, np.ndarray]:
    """The max's padding maps: one row and column after the map."""
    return source_rows(height, 0, 1, padding), source_rows(width, 0, 1, padding)


@lru_cache(maxsize=64)
def _maps(height: int, width: int, radius: int, padding: str) -> tuple[np.ndarray, ...]:
    """The max's padding maps, then the filter's (``radius`` on every side)."""
    return (*_max_maps(height, width, padding), source_rows(height, radius, radius, padding),
            source_rows(width, radius, radius, padding))


@lru_cache(maxsize=8)
def _taps(size: int, dtype: torch.dtype) -> np.ndarray:
    """kornia's normalised 1-D Pascal kernel (its 2-D one is the outer product, exactly)."""
    return get_pascal_kernel_1d(size, norm=True).to(dtype).numpy()


def _rows(x: Tensor) -> np.ndarray:
    """``(N, C, H, W)`` as the ``(N, H, W * C)`` array of its channels_last copy (a view if
    ``x`` is channels_last)."""
    n, c, h, w = x.shape
    x = x.detach().contiguous(memory_format=torch.channels_last)
    return x.permute(0, 2, 3, 1).reshape(n, h, w * c).numpy()


def _in_layout(out: Tensor, layout: torch.memory_format) -> Tensor:
    """A kernel's ``(N, H, W, C)`` output as the map ``(N, C, H, W)`` in ``layout``."""
    return out.permute(0, 3, 1, 2).contiguous(memory_format=layout)


def _choices(ctx: torch.autograd.function.FunctionCtx, x: Tensor) -> Tensor:
    """Room for which input each of ``x``'s windows takes, ``int8 (N, H, W * C)``: empty
    where no backward will need it."""
    n, c, h, w = x.shape
    return torch.empty((n if ctx.needs_input_grad[0] else 0, h, w * c), dtype=torch.int8)


class _BlurMax(torch.autograd.Function):
    """``blurmax``: forward and backward by ``blurmax_forward`` and ``blurmax_backward``, in
    ``x``'s layout."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,  # type: ignore[override]
                size: int, padding: str) -> Tensor:
        n, c, h, w = x.shape
        out = torch.empty((n, (h + 1) // 2, (w + 1) // 2, c), dtype=x.dtype)
        choice = _choices(ctx, x)  # 1. which input each window's max is
        blurmax_forward(_rows(x), c, _taps(size, x.dtype), *_maps(h, w, size // 2, padding),
                        out.view(n, out.shape[1], -1).numpy(), choice.numpy())
        ctx.save_for_backward(choice)
        ctx.size, ctx.padding = size, padding  # type: ignore[attr-defined]
        ctx.shape, ctx.dtype = x.shape, x.dtype  # type: ignore[attr-defined]
        ctx.layout = memory_layout(x)  # type: ignore[attr-defined]
        return _in_layout(out, ctx.layout)  # type: ignore[attr-defined]

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor, None, None]:
        (choice,) = ctx.saved_tensors  # type: ignore[attr-defined]
        size, padding, dtype = ctx.size, ctx.padding, ctx.dtype  # type: ignore[attr-defined]
        (n, c, h, w), layout = ctx.shape, ctx.layout  # type: ignore[attr-defined]
        out = torch.empty((n, h, w, c), dtype=dtype)
        blurmax_backward(choice.numpy(), _rows(grad.to(dtype)), c, _taps(size, dtype),
                         *_maps(h, w, size // 2, padding), out.view(n, h, -1).numpy())
        return _in_layout(out, layout), None, None


def _tracked(x: Tensor) -> Tensor:
    """``x``, detached where no gradient will be taken (``no_grad``), so that the forward
    keeps no choices for a backward."""
    return x if torch.is_grad_enabled() else x.detach()


def blurmax(x: Tensor, size: int, padding: str) -> Tensor:
    """``BlurMaxPool2d(C, size, padding)`` of a float32 or float64 CPU map ``(N, C, H, W)``
    with ``H``, ``W`` above ``size // 2`` and at least 2: ``(N, C, ceil(H / 2), ceil(W /
    2))`` in ``x``'s layout, differentiable once."""
    return _BlurMax.apply(_tracked(x), size, padding)


class _AdaptiveMax(torch.autograd.Function):
    """``ApsMaxPool2d``: the max by ``max_2x2_forward``, the kept components by ``sample`` of
    it, and the backward by ``aps_max_backward`` from the kept windows alone, in ``x``'s
    layout."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,  # type: ignore[override]
                padding: str, sample: Sampler) -> Tensor:
        n, c, h, w = x.shape
        maxed = torch.empty((n, h, w, c), dtype=x.dtype)
        choice = _choices(ctx, x)
        max_2x2_forward(_rows(x), c, *_max_maps(h, w, padding), maxed.view(n, h, -1).numpy(),
                        choice.numpy())
        layout = memory_layout(x)
        kept, phases = sample(_in_layout(maxed, layout))
        ctx.save_for_backward(choice, phases)
        ctx.padding, ctx.shape, ctx.dtype = padding, x.shape, x.dtype  # type: ignore[attr-defined]
        ctx.layout = layout  # type: ignore[attr-defined]
        return kept

    @staticmethod
    @once_differentiable
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor, None, None]:
        choice, phases = ctx.saved_tensors  # type: ignore[attr-defined]
        padding, dtype, layout = ctx.padding, ctx.dtype, ctx.layout  # type: ignore[attr-defined]
        n, c, h, w = ctx.shape  # type: ignore[attr-defined]
        out = torch.empty((n, h, w, c), dtype=dtype)
        rows = out.view(n, h, -1).numpy()
        aps_max_backward(choice.numpy(), _rows(grad.to(dtype)), phases.numpy(), c,
                         *_max_maps(h, w, padding), np.zeros(1, rows.dtype), rows)
        return _in_layout(out, layout), None, None


def adaptive_max(x: Tensor, padding: str, sample: Sampler) -> Tensor:
    """``ApsMaxPool2d(padding)`` of a float32 or float64 CPU map ``(N, C, H, W)`` with even
    ``H``, ``W``: the 2x2 max at stride 1 (``max_2x2_stride_1``'s values), then ``sample``
    of it, which returns the kept components ``(N, C, H/2, W/2)`` and each image's
    component index ``(N,)``; differentiable once, with the gradient of
    ``max_2x2_stride_1`` followed by that sampling, bit for bit."""
    return _AdaptiveMax.apply(_tracked(x), padding, sample)
