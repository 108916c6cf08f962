"""Padding in the map's own memory layout: circular padding as one op, and the convolution that
pads with it.

torch's circular padding (``F.pad(mode="circular")``, and ``nn.Conv2d`` with
``padding_mode="circular"``, which calls it) returns a contiguous map whatever its input's
layout, built from many slice copies, and its backward runs through as many. In a channels_last
network that one copy turns every later op of the block into a layout conversion:
``benchmarks/README.md``, "Downsampling and padding", has what it cost. ``F.pad``'s constant and
reflect modes keep channels_last and are used as they are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["CircularConv2d", "CircularConvolution", "CircularPad2d", "memory_layout", "pad2d"]

# torch.nn.Conv2d's padding_mode -> the mode of torch.nn.functional.pad
PAD_MODES = {"zeros": "constant", "circular": "circular", "reflect": "reflect"}


def memory_layout(x: Tensor) -> torch.memory_format:
    """``x``'s memory format: channels_last if it is laid out so, else contiguous."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def _wrapped(x: Tensor, pads: tuple[int, int, int, int], layout: torch.memory_format,
             ) -> Tensor:
    """``x`` circularly padded: a new map of ``layout`` holding ``x`` in its middle, then the
    rows it wraps to (copied from ``x``), then the columns (copied from the padded map itself,
    which brings the corners along)."""
    left, right, top, bottom = pads
    height, width = x.shape[-2:]
    out = torch.empty((*x.shape[:-2], top + height + bottom, left + width + right),
                      dtype=x.dtype, device=x.device, memory_format=layout)
    out[..., top:top + height, left:left + width] = x
    out[..., :top, left:left + width] = x[..., height - top:, :]
    out[..., top + height:, left:left + width] = x[..., :bottom, :]
    out[..., :left] = out[..., width:width + left]
    out[..., left + width:] = out[..., left:left + right]
    return out


def _unwrapped(grad: Tensor, pads: tuple[int, int, int, int], layout: torch.memory_format,
               ) -> Tensor:
    """The gradient of ``_wrapped``: the middle of ``grad``, with each of the eight border
    strips (four sides, four corners) added onto the strip of the map it was copied from."""
    left, right, top, bottom = pads
    height, width = grad.shape[-2] - top - bottom, grad.shape[-1] - left - right
    out = grad[..., top:top + height, left:left + width].clone(memory_format=layout)
    # (start in grad, length, start in the map) of the border strips along each axis
    rows = [(0, top, height - top), (top, height, 0), (top + height, bottom, 0)]
    columns = [(0, left, width - left), (left, width, 0), (left + width, right, 0)]
    for row, n_rows, to_row in rows:
        for column, n_columns, to_column in columns:
            if (row, column) == (top, left) or not n_rows or not n_columns:
                continue  # the middle, already in out, or an empty strip
            out[..., to_row:to_row + n_rows, to_column:to_column + n_columns] += grad[
                ..., row:row + n_rows, column:column + n_columns]
    return out


def _pad_for_backward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,
                      pads: tuple[int, int, int, int]) -> Tensor:
    """``_wrapped(x, pads)`` in ``x``'s layout, the pads and the layout kept in ``ctx``."""
    left, right, top, bottom = pads
    if max(top, bottom) > x.shape[-2] or max(left, right) > x.shape[-1]:
        raise ValueError(f"circular padding {pads} is larger than the map {tuple(x.shape)}")
    ctx.pads, ctx.layout = pads, memory_layout(x)  # type: ignore[attr-defined]
    return _wrapped(x, pads, ctx.layout)  # type: ignore[attr-defined]


class CircularPad2d(torch.autograd.Function):
    """Circular padding of an ``(N, C, H, W)`` map by ``(left, right, top, bottom)``, each at
    most the map's size along its axis: the same values as ``F.pad(mode="circular")``, in the
    input's memory format, with a backward of one copy and eight strip additions.

    1. Forward fills a map allocated in the input's layout, with one copy of the map and four
       of its borders; ``torch.cat`` would pick the layout of its first piece, which for an
       empty border strip is the contiguous one.
    2. Backward is written out, not left to autograd: through slices and copies, autograd adds
       a zero-filled full-size map for every strip. Plain ops only, so it is deterministic on
       every device; the strips are added in a fixed order.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,  # type: ignore[override]
                pads: tuple[int, int, int, int]) -> Tensor:
        return _pad_for_backward(ctx, x, pads)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor, None]:
        return _unwrapped(grad, ctx.pads, ctx.layout), None  # type: ignore[attr-defined]


def pad2d(x: Tensor, pads: tuple[int, int, int, int], padding: str) -> Tensor:
    """``x`` padded by ``(left, right, top, bottom)`` in ``padding`` (a ``Conv2d`` padding mode),
    keeping channels_last: ``CircularPad2d`` for circular, ``F.pad`` for the others."""
    if padding == "circular":
        return CircularPad2d.apply(x, pads)
    return F.pad(x, pads, mode=PAD_MODES[padding])


class CircularConvolution(torch.autograd.Function):
    """``F.conv2d`` at stride 1 of ``x`` circularly padded by ``(left, right, top, bottom)``
    (``CircularPad2d``), the map's size kept (``left + right`` and ``top + bottom`` one less
    than the kernel's sides), with a backward of its own for the input.

    1. The input's gradient of a circular convolution is a circular convolution too: of the
       output's gradient, padded the other way round (``right, left, bottom, top``), with the
       kernel flipped and its channels swapped. That is one convolution the size of the map;
       autograd's takes the padded map's gradient (1.44 times the positions for 10x10, 1.96
       for 5x5) and then folds its border back. The same sums, rounded in another order.
    2. The weight's and bias's gradients are the convolution's own (``convolution_backward``
       on the padded map), bit for bit.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,  # type: ignore[override]
                weight: Tensor, bias: Tensor | None, pads: tuple[int, int, int, int]) -> Tensor:
        padded = _pad_for_backward(ctx, x, pads)
        ctx.save_for_backward(padded, weight)
        ctx.has_bias = bias is not None  # type: ignore[attr-defined]
        return F.conv2d(padded, weight, bias)

    @staticmethod
    @once_differentiable  # its backward is no graph: a second derivative raises
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        padded, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        left, right, top, bottom = ctx.pads  # type: ignore[attr-defined]
        grad_x = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            turned = _wrapped(grad, (right, left, bottom, top), ctx.layout)  # type: ignore
            grad_x = F.conv2d(turned, weight.flip(2, 3).transpose(0, 1))
        mask = [False, *ctx.needs_input_grad[1:3]]  # type: ignore[attr-defined]
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, padded, weight, [len(weight)] if ctx.has_bias else None,  # type: ignore
            [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)
        return grad_x, grad_weight, grad_bias, None


class CircularConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``padding_mode="circular"`` whose padding is ``CircularPad2d``: the
    same function and parameters (a drop-in for checkpoints), its map kept channels_last; at
    stride 1 as ``CircularConvolution``."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 padding: int, bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias,
                         padding_mode="circular")

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        pads = tuple(self._reversed_padding_repeated_twice)
        if (self.stride, self.dilation, self.groups) == ((1, 1), (1, 1), 1) and (
                pads[0] + pads[1], pads[2] + pads[3]) == (weight.shape[3] - 1,
                                                          weight.shape[2] - 1):
            return CircularConvolution.apply(input, weight, bias, pads)
        padded = CircularPad2d.apply(input, pads)
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
