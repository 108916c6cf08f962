"""Padding in the map's own memory layout, as one gather: circular and reflect padding, and the
convolutions that pad with it.

torch's circular padding (``F.pad(mode="circular")``, and ``nn.Conv2d`` with
``padding_mode="circular"``, which calls it) returns a contiguous map whatever its input's
layout, and in a channels_last network that one copy turns every later op of the block into a
layout conversion. Its reflect mode keeps the layout but is slow on few channels (80 us for the
first layer's one-channel batch, where a gather takes 15). ``gather_pad`` does both modes as one
``index_select`` of the map's positions, in the input's layout: the same values, and autograd's
backward (``index_add_`` of each copy's gradient, in the padded map's row-major order) the same
sums in the same order as torch's reflect backward. ``benchmarks/README.md``, "Downsampling and
padding", has what each step cost.
"""

from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

__all__ = ["CircularConvolution", "PaddedConv2d", "gather_pad", "memory_layout", "pad2d"]

# torch.nn.Conv2d's padding_mode -> the mode of torch.nn.functional.pad
PAD_MODES = {"zeros": "constant", "circular": "circular", "reflect": "reflect"}


def memory_layout(x: Tensor) -> torch.memory_format:
    """``x``'s memory format: channels_last if it is laid out so, else contiguous."""
    channels_last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if channels_last else torch.contiguous_format


def _axis_sources(size: int, before: int, after: int, mode: str) -> Tensor:
    """Which of ``size`` positions each of the ``before + size + after`` padded positions along
    one axis copies, with torch's limits: circular wraps around at most once, reflect (the
    edge not repeated) needs a pad smaller than the map."""
    largest = max(before, after)
    if largest > size or (mode == "reflect" and largest >= size):
        raise ValueError(f"{mode} padding of {largest} is too large for a map side of {size}: "
                         f"at most {size if mode == 'circular' else size - 1}")
    position = torch.arange(-before, size + after)
    if mode == "circular":
        return position % size
    position = position.abs()
    return torch.where(position >= size, 2 * (size - 1) - position, position)


@lru_cache(maxsize=256)
def _sources(height: int, width: int, pads: tuple[int, int, int, int], mode: str,
             device: torch.device) -> Tensor:
    """For each position of the padded map in row-major order, the flat index (``row * width
    + column``) of the map's position it copies. Made outside inference mode, so that the
    cached tensor serves training too."""
    left, right, top, bottom = pads
    with torch.inference_mode(False):
        rows = _axis_sources(height, top, bottom, mode)
        columns = _axis_sources(width, left, right, mode)
        return (rows[:, None] * width + columns[None, :]).reshape(-1).to(device)


def gather_pad(x: Tensor, pads: tuple[int, int, int, int], mode: str) -> Tensor:
    """``x`` ``(N, C, H, W)`` padded by ``(left, right, top, bottom)`` in ``mode``
    (``circular`` or ``reflect``): ``F.pad``'s values, in ``x``'s memory layout.

    1. One ``index_select`` of the map's positions, each position's channels moved together
       (channels_last) or each channel's positions (contiguous).
    2. Its gradient is autograd's: ``index_add_`` into zeros, each position summing the
       gradients of its copies in the padded map's row-major order. That is deterministic on
       every device (torch's deterministic mode covers ``index_add_`` on CUDA).
    """
    n, channels, height, width = x.shape
    left, right, top, bottom = pads
    sources = _sources(height, width, tuple(pads), mode, x.device)
    padded_size = (top + height + bottom, left + width + right)
    if memory_layout(x) == torch.channels_last:
        positions = x.permute(0, 2, 3, 1).reshape(n, height * width, channels)
        return positions.index_select(1, sources).view(n, *padded_size, channels).permute(
            0, 3, 1, 2)
    return x.reshape(n, channels, height * width).index_select(2, sources).view(
        n, channels, *padded_size)


def pad2d(x: Tensor, pads: tuple[int, int, int, int], padding: str) -> Tensor:
    """``x`` padded by ``(left, right, top, bottom)`` in ``padding`` (a ``Conv2d`` padding mode),
    keeping its layout: ``F.pad`` for zeros, ``gather_pad`` for the others."""
    if padding == "zeros":
        return F.pad(x, pads)
    if padding not in PAD_MODES:
        raise ValueError(f"unknown padding {padding!r}; allowed: {', '.join(PAD_MODES)}")
    return gather_pad(x, pads, padding)


class CircularConvolution(torch.autograd.Function):
    """``F.conv2d`` at stride 1 of ``x`` circularly padded by ``(left, right, top, bottom)``
    (``gather_pad``), the map's size kept (``left + right`` and ``top + bottom`` one less
    than the kernel's sides), with a backward of its own for the input.

    1. The input's gradient of a circular convolution is a circular convolution too: of the
       output's gradient, padded the other way round (``right, left, bottom, top``), with the
       kernel flipped and its channels swapped (``conv_transpose2d`` with the kernel's size
       less one as its padding, so that nothing but the padded gradient is read). That is one
       convolution the size of the map;
       autograd's takes the padded map's gradient (1.44 times the positions for 10x10, 1.96
       for 5x5) and then folds its border back. The same sums, rounded in another order.
    2. The weight's and bias's gradients are the convolution's own (``convolution_backward``
       on the padded map), bit for bit.
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: Tensor,  # type: ignore[override]
                weight: Tensor, bias: Tensor | None, pads: tuple[int, int, int, int]) -> Tensor:
        padded = gather_pad(x, pads, "circular")
        ctx.save_for_backward(padded, weight)
        ctx.pads, ctx.has_bias = pads, bias is not None  # type: ignore[attr-defined]
        return F.conv2d(padded, weight, bias)

    @staticmethod
    @once_differentiable  # its backward is no graph: a second derivative raises
    def backward(ctx: torch.autograd.function.FunctionCtx,  # type: ignore[override]
                 grad: Tensor) -> tuple[Tensor | None, Tensor | None, Tensor | None, None]:
        padded, weight = ctx.saved_tensors  # type: ignore[attr-defined]
        left, right, top, bottom = ctx.pads  # type: ignore[attr-defined]
        grad_x = None
        if ctx.needs_input_grad[0]:  # type: ignore[attr-defined]
            turned = gather_pad(grad, (right, left, bottom, top), "circular")
            # the correlation of turned with the flipped kernel, without a flipped copy
            grad_x = F.conv_transpose2d(turned, weight, padding=(top + bottom, left + right))
        mask = [False, *ctx.needs_input_grad[1:3]]  # type: ignore[attr-defined]
        _, grad_weight, grad_bias = torch.ops.aten.convolution_backward(
            grad, padded, weight, [len(weight)] if ctx.has_bias else None,  # type: ignore
            [1, 1], [0, 0], [1, 1], False, [0, 0], 1, mask)
        return grad_x, grad_weight, grad_bias, None


class PaddedConv2d(nn.Conv2d):
    """``nn.Conv2d`` with ``padding_mode`` ``circular`` or ``reflect`` whose padding is
    ``gather_pad``: the same function and parameters as torch's (a drop-in for checkpoints),
    its map kept channels_last.

    1. A circular convolution at stride 1 whose input needs a gradient is
       ``CircularConvolution``; everything else is ``F.conv2d`` of the padded map, with
       autograd's backward (for an input without a gradient, such as the images, the same
       weight gradient as ``CircularConvolution``'s, without its Python backward).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, *,
                 padding: int, padding_mode: str, bias: bool = True) -> None:
        if padding_mode not in ("circular", "reflect"):
            raise ValueError(f"PaddedConv2d pads circular or reflect, not {padding_mode!r}")
        super().__init__(in_channels, out_channels, kernel_size, padding=padding, bias=bias,
                         padding_mode=padding_mode)

    def _conv_forward(self, input: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
        pads = tuple(self._reversed_padding_repeated_twice)
        if self.padding_mode == "circular" and input.requires_grad and (
                self.stride, self.dilation, self.groups) == ((1, 1), (1, 1), 1) and (
                pads[0] + pads[1], pads[2] + pads[3]) == (weight.shape[3] - 1,
                                                          weight.shape[2] - 1):
            return CircularConvolution.apply(input, weight, bias, pads)
        padded = gather_pad(input, pads, self.padding_mode)
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)
