"""The backbone's downsampling between blocks, one op per class (``docs/study.md``, "The
mechanism of translation robustness"): a plain 2x2 max-pool, or Zhang's (2019) anti-aliased
max-pool, padded in the network's padding mode.

Padding modes are the ``torch.nn.Conv2d`` names (``zeros``, ``circular``, ``reflect``), and every
padding of a network uses the same one, so that ``circular`` makes the whole network equivariant
to circular shifts by multiples of its total stride.
"""

from __future__ import annotations

import torch.nn.functional as F
from kornia.filters.kernels import get_pascal_kernel_2d
from torch import Tensor, nn

__all__ = ["BlurMaxPool2d", "make_downsample"]

# torch.nn.Conv2d's padding_mode -> the mode of torch.nn.functional.pad
_PAD_MODES = {"zeros": "constant", "circular": "circular", "reflect": "reflect"}


class BlurMaxPool2d(nn.Module):
    """2x2 max at stride 1, then a binomial low-pass filter at stride 2: ``(N, C, H, W) ->
    (N, C, H/2, W/2)`` for even ``H``, ``W``.

    The filter is kornia's normalised Pascal kernel. Unlike kornia's ``MaxBlurPool2D`` (zero
    padding) and antialiased-cnns' ``BlurPool`` (reflect padding by default), both steps pad in
    ``padding`` mode: the max one row and column after the map, so its size is kept, and the
    filter ``blur_size // 2`` on every side.
    """

    def __init__(self, channels: int, blur_size: int = 3, padding: str = "zeros") -> None:
        super().__init__()
        if blur_size % 2 != 1:
            raise ValueError(f"blur_size must be odd, got {blur_size}")
        self.channels, self.blur_size, self.mode = channels, blur_size, _PAD_MODES[padding]
        kernel = get_pascal_kernel_2d(blur_size, norm=True)
        # a buffer outside the state dict: fixed, so checkpoints hold only learned weights
        self.register_buffer("kernel", kernel.expand(channels, 1, blur_size, blur_size).clone(),
                             persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.pad(x, (0, 1, 0, 1), mode=self.mode), kernel_size=2, stride=1)
        radius = self.blur_size // 2
        x = F.pad(x, (radius, radius, radius, radius), mode=self.mode)
        return F.conv2d(x, self.kernel, stride=2, groups=self.channels)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, blur_size={self.blur_size}, mode={self.mode!r}"


def make_downsample(kind: str, channels: int, blur_size: int, padding: str) -> nn.Module:
    """The layer that halves the map between two blocks: ``max`` or ``blurmax``."""
    if kind == "max":
        return nn.MaxPool2d(2)
    if kind == "blurmax":
        return BlurMaxPool2d(channels, blur_size, padding)
    raise ValueError(f"unknown downsample {kind!r}; allowed: max, blurmax")
