"""Padding in the map's own memory layout: circular padding as one gather, and the convolution
that pads with it.

torch's circular padding (``F.pad(mode="circular")``, and ``nn.Conv2d`` with
``padding_mode="circular"``, which calls it) returns a contiguous map whatever its input's
layout, built from many slice copies, and its backward runs through as many. In a channels_last
network that one copy turns every later op of the block into a layout conversion.
``circular_pad`` is one ``index_select`` of the map's positions instead, in the input's layout.
``F.pad``'s constant and reflect modes keep channels_last and are used as they are.
``benchmarks/README.md``, "Downsampling and padding", has what each step cost.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["CircularConv2d", "CircularConvolution", "circular_pad", "memory_layout", "pad2d"]

# torch.nn.Conv2d's padding_mode -> the mode of torch.nn.functional.pad
PAD_MODES = {"zeros": "constant", "circular": "circular", "reflect": "reflect"}


def memory_layout(x: Tensor) -> torch.memory_format:
    """``x``'s memory format: channels_last if it is laid out so, else contiguous."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


@lru_cache(maxsize=256)
def _sources(height: int, width: int, pads: tuple[int, int, int, int],
             device: torch.device) -> Tensor:
    """For each position of the circularly padded map in row-major order, the flat index
    (``row * width + column``) of the map's position it copies. Made outside inference mode,
    so that the cached tensor serves training too."""
    left, right, top, bottom = pads
    if max(top, bottom) > height or max(left, right) > width:
        raise ValueError(f"circular padding {pads} is larger than the map {height}x{width}: "
                         "it wraps around at most once")
    with torch.inference_mode(False):
        rows = torch.arange(-top, height + bottom) % height
        columns = torch.arange(-left, width + right) % width
        return (rows[:, None] * width + columns[None, :]).reshape(-1).to(device)


def circular_pad(x: Tensor, pads: tuple[int, int, int, int]) -> Tensor:
    """``x`` ``(N, C, H, W)`` circularly padded by ``(left, right, top, bottom)``, each at most
    the map's side: ``F.pad(mode="circular")``'s values, in ``x``'s memory layout.

    1. One ``index_select`` of the map's positions: each position's channels move together
       (channels_last), or each channel's positions (contiguous).
    2. Its gradient is autograd's, ``index_add_`` into zeros: each position sums its copies'
       gradients in the padded map's row-major order. Deterministic on CPU; on CUDA only in
       torch's deterministic mode, which the study's runs set (``seed_everything``).
    """
    n, channels, height, width = x.shape
    left, right, top, bottom = pads
    sources = _sources(height, width, tuple(pads), x.device)
    padded_size = (top + height + bottom, left + width + right)
    if memory_layout(x) == torch.channels_last:
        positions = x.permute(0, 2, 3, 1).reshape(n, height * width, channels)
        return positions.index_select(1, sources).view(n, *padded_size, channels).permute(
            0, 3, 1, 2)
    return x.reshape(n, channels, height * width).index_select(2, sources).view(
        n, channels, *padded_size)


def pad2d(x: Tensor, pads: tuple[int, int, int, int], padding: str) -> Tensor:
    """``x`` padded by ``(left, right, top, bottom)`` in ``padding`` (a ``Conv2d`` padding mode),
    keeping channels_last: ``circular_pad`` for circular, ``F.pad`` for the others."""
    if padding == "circular":
        return circular_pad(x, pads)
    return F.pad(x, pads, mode=PAD_MODES[padding])


class CircularConvolution(torch.autograd.Function):
    """``F.conv2d`` at stride 1 of ``x`` circularly padded by ``(left, right, top, bottom)``
    (``circular_pad``), the map's size kept (``left + right`` and ``top + bottom`` one less
    than the kernel's sides), with a backward of its own for the input.

    1. The input's gradient of a circular convolution is a circular convolution too: of the
       output's gradient, padded the other way round (``right, left, bottom, top``) in the
       input's layout, with the kernel flipped and its channels swapped. That is one
       convolution the size of the map; autograd's takes the padded map's gradient (1.44
       times the positions for 10x10, 1.96 for 5x5) and then folds its border back. The same
       sums, rounded in another order.
    2. The weight's and bias's gradients are the convolution's own (``convolution_backward``
       on the padded map), bit for bit.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,  # type: ignore[override]
                weight: Tensor, bias: Tensor | None, pads: tuple[int, int, int, int]) -> Tensor:
        padded = circular_pad(x, pads)
        ctx.save_for_backward(padded, weight)
        ctx.pads, ctx.has_bias = pads, bias is not None  # type: ignore[attr-defined]
        ctx.layout = memory_layout(x)  # type: ignore[attr-defined]
        return F.conv2d(padded, weight, bias)

    @staticmethod
    @once_differentiable  # its backward is no graph: a second derivative raises
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        padded, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        left, right, top, bottom = ctx.pads  # type: ignore[attr-defined]
        grad_x = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            layout = ctx.layout  # type: ignore[attr-defined]
            turned = circular_pad(grad.contiguous(memory_format=layout),
                                  (right, left, bottom, top))
            grad_x = F.conv2d(turned, weight.flip(2, 3).transpose(0, 1))
        mask = [False, *ctx.needs_input_grad[1:3]]  # type: ignore[attr-defined]
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, padded, weight, [len(weight)] if ctx.has_bias else None,  # type: ignore
            [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)
        return grad_x, grad_weight, grad_bias, None


class CircularConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``padding_mode="circular"`` whose padding is ``circular_pad``: the
    same function and parameters (a drop-in for checkpoints), its map kept channels_last.

    1. At stride 1, for an input that needs a gradient, ``CircularConvolution``; otherwise
       ``F.conv2d`` of the padded map with autograd's backward (for the images: the same
       weight gradient, without a Python backward).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 padding: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias,
                         padding_mode="circular")

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        pads = tuple(self._reversed_padding_repeated_twice)
        if input.requires_grad and (self.stride, self.dilation, self.groups) == (
                (1, 1), (1, 1), 1) and (pads[0] + pads[1], pads[2] + pads[3]) == (
                weight.shape[3] - 1, weight.shape[2] - 1):
            return CircularConvolution.apply(input, weight, bias, pads)
        padded = circular_pad(input, pads)
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
