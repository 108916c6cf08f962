"""The backbone's downsampling between blocks, one op per class (``docs/study.md``, "The
mechanism of translation robustness"): a plain 2x2 max-pool, or Zhang's (2019) anti-aliased
max-pool, padded in the network's padding mode (``gap_study.nets.padding``).

Padding modes are the ``torch.nn.Conv2d`` names (``zeros``, ``circular``, ``reflect``), and every
padding of a network uses the same one, so that ``circular`` makes the whole network equivariant
to circular shifts by multiples of its total stride.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.filters.kernels import get_pascal_kernel_2d
from torch import Tensor, nn

from gap_study.nets.padding import PAD_MODES, pad2d

__all__ = ["BlurMaxPool2d", "make_downsample"]


class BlurMaxPool2d(nn.Module):
    """2x2 max at stride 1, then a binomial low-pass filter at stride 2: ``(N, C, H, W) ->
    (N, C, H/2, W/2)`` for even ``H``, ``W``.

    The filter is kornia's normalised Pascal kernel. Unlike kornia's ``MaxBlurPool2D`` (zero
    padding) and antialiased-cnns' ``BlurPool`` (reflect padding by default), both steps pad in
    ``padding`` mode: the max one row and column after the map, so its size is kept, and the
    filter ``blur_size // 2`` on every side. (kornia's ``max_blur_pool2d`` does not pad the max,
    so its last row and column of output differ from this layer's in every mode; only its
    kernel is used.)

    1. Every padding keeps the map's layout (``gap_study.nets.padding.pad2d``), and zero padding
       of the filter happens inside its convolution, without a padded copy.
    2. The 2x2 max at stride 1 is the same function two ways: ``max_pool2d`` on a channels_last
       map while gradients are tracked (its backward routes each window's gradient to one
       input, the first maximum in row-major order), and the maximum of four shifted views
       without them (evaluation), which gives the same values several times faster on CPU.
       ``max_pool2d`` at stride 1 is several times slower again on a contiguous map.
    """

    def __init__(self, channels: int, blur_size: int = 3, padding: str = "zeros") -> None:
        super().__init__()
        if blur_size % 2 != 1:
            raise ValueError(f"blur_size must be odd, got {blur_size}")
        if padding not in PAD_MODES:
            raise ValueError(f"unknown padding {padding!r}; allowed: {', '.join(PAD_MODES)}")
        self.channels, self.blur_size, self.padding = channels, blur_size, padding
        kernel = get_pascal_kernel_2d(blur_size, norm=True)
        # a buffer outside the state dict: fixed, so checkpoints hold only learned weights
        self.register_buffer("kernel", kernel.expand(channels, 1, blur_size, blur_size).clone(),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = pad2d(x, (0, 1, 0, 1), self.padding)
        if torch.is_grad_enabled():
            x = F.max_pool2d(x.contiguous(memory_format=torch.channels_last), 2, stride=1)
        else:
            x = torch.maximum(torch.maximum(x[..., :-1, :-1], x[..., 1:, :-1]),
                              torch.maximum(x[..., :-1, 1:], x[..., 1:, 1:]))
        radius = self.blur_size // 2
        if self.padding == "zeros":  # the convolution pads, without a padded copy
            return F.conv2d(x, self.kernel, stride=2, padding=radius, groups=self.channels)
        x = pad2d(x, (radius, radius, radius, radius), self.padding)
        return F.conv2d(x, self.kernel, stride=2, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, blur_size={self.blur_size}, padding={self.padding!r}"


def make_downsample(kind: str, channels: int, blur_size: int, padding: str) -> nn.Module:
    """The layer that halves the map between two blocks: ``max`` or ``blurmax``."""
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "blurmax":
        return BlurMaxPool2d(channels, blur_size, padding)
    raise ValueError(f"unknown downsample {kind!r}; allowed: max, blurmax")
