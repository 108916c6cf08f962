"""The study's model in names and numbers, without torch: which heads exist, which of them have
class activation maps, the backbone's geometry, and ``ModelConfig``, from which
``gap_study.nets.models`` builds a network.

Torch-free so that validating ``params.yaml`` (before every stage's kernel starts), the
report and the sweep can use it without importing torch. Definitions: ``docs/study.md``,
section "Heads".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Protocol

__all__ = [
    "BLUR_SIZES",
    "DOWNSAMPLES",
    "FACTORIAL",
    "FLATTEN_HEAD_NAMES",
    "HEADS_UNDER_TEST",
    "HEAD_NAMES",
    "PADDINGS",
    "POOLED_HEAD_NAMES",
    "DatasetShape",
    "ModelConfig",
    "feature_map_shape",
    "has_class_map",
    "pools_globally",
    "total_stride",
]

# heads that pool the feature map globally and then apply one linear layer, in this order
POOLED_HEAD_NAMES: tuple[str, ...] = ("gap", "gmp", "gsp", "gem", "lse", "avgmax")
# heads that keep the map's positions: flatten (dense with or without dropout, linear), or
# average 2x2 cells first (the write-up's reference's "global average pooling")
FLATTEN_HEAD_NAMES: tuple[str, ...] = ("dense", "dense_dropout", "linear", "avg2x2_dense")
HEAD_NAMES: tuple[str, ...] = (*FLATTEN_HEAD_NAMES, *POOLED_HEAD_NAMES, "gap_hidden", "nin",
                               "gsp_scaled")
# the heads the write-up's claims are about: global pooling replaces the dense layers (the
# pooled linear heads, and nin's class maps); the others are baselines and controls
HEADS_UNDER_TEST: tuple[str, ...] = (*POOLED_HEAD_NAMES, "nin")
# Heads whose class score is a linear function of pooled feature maps, so that a class
# activation map M_c = sum_k w_ck f_k exists. The flatten heads mix every position into each
# unit; gap_hidden pools, but a hidden layer stands between the pooled maps and the score.
_CLASS_MAP_HEADS = frozenset((*POOLED_HEAD_NAMES, "nin", "gsp_scaled"))
# {map: flatten or global average} x {hidden layer}: which head is which cell, so that the
# report can separate spatial pooling from the head's capacity
FACTORIAL: dict[tuple[str, bool], str] = {
    ("flatten", False): "linear", ("flatten", True): "dense",
    ("global average", False): "gap", ("global average", True): "gap_hidden"}

# the mechanism factors (docs/study.md, "The mechanism of translation robustness"): how the
# backbone halves its map between blocks (a max-pool, the anti-aliased max-pool, or adaptive
# polyphase sampling), the binomial filter's size, and how every layer pads
DOWNSAMPLES: tuple[str, ...] = ("max", "blurmax", "aps")
BLUR_SIZES: tuple[int, ...] = (3, 5)
PADDINGS: tuple[str, ...] = ("zeros", "circular", "reflect")


def _check(head: str) -> str:
    if head not in HEAD_NAMES:
        raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEAD_NAMES)}")
    return head


def has_class_map(head: str) -> bool:
    """Whether ``head`` has a class activation map (the heads linear on pooled maps)."""
    return _check(head) in _CLASS_MAP_HEADS


def pools_globally(head: str) -> bool:
    """Whether ``head`` pools the feature map over all positions (the heads the write-up's
    claims are about)."""
    return _check(head) not in FLATTEN_HEAD_NAMES


def total_stride(widths: Sequence[int]) -> int:
    """How many input pixels one step on the backbone's last map spans: the downsampling
    between consecutive blocks halves the map, so ``2 ** (blocks - 1)``."""
    return 2 ** (len(widths) - 1)


def feature_map_shape(image_size: int, widths: Sequence[int]) -> tuple[int, int, int]:
    """``(C, H, W)`` of the backbone output for a square ``image_size`` input."""
    size = image_size // total_stride(widths)
    if size < 1:
        raise ValueError(f"image_size {image_size} is too small for {len(widths)} blocks")
    return widths[-1], size, size


class DatasetShape(Protocol):
    """What a model needs to know of its data: a ``gap_study.data.canvas.CanvasDataset`` has it."""

    @property
    def in_channels(self) -> int: ...

    @property
    def image_size(self) -> int: ...

    num_classes: int


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; stored in each checkpoint."""

    head: str
    in_channels: int
    image_size: int
    num_classes: int
    widths: tuple[int, ...] = (16, 32, 64)
    dense_hidden: int = 500  # hidden units of dense, dense_dropout, avg2x2_dense, gap_hidden
    gem_p: float = 3.0  # initial exponent of the gem head's learnable p
    lse_r: float = 10.0  # temperature of the lse head
    dropout: float = 0.5  # dense_dropout's dropout probability
    downsample: str = "max"  # between blocks: one of DOWNSAMPLES
    blur_size: int = 3  # blurmax's filter size: one of BLUR_SIZES
    padding: str = "zeros"  # every convolution's and pooling's padding: one of PADDINGS

    def __post_init__(self) -> None:
        _check(self.head)
        for name, allowed in (("downsample", DOWNSAMPLES), ("blur_size", BLUR_SIZES),
                              ("padding", PADDINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"unknown {name} {getattr(self, name)!r}; allowed: "
                                 f"{', '.join(map(str, allowed))}")
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        stride = total_stride(self.widths)
        if self.downsample == "aps" and self.image_size % stride:
            # 1. each polyphase component must be the same size for a circular shift to
            #    permute them: every map that APS halves has an even side
            raise ValueError(f"downsample 'aps' needs an image size divisible by the total "
                             f"stride {stride} of {len(self.widths)} blocks, got "
                             f"{self.image_size}")

    def to_dict(self) -> dict:
        return {**asdict(self), "widths": list(self.widths)}

    @property
    def feature_map_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of the backbone output."""
        return feature_map_shape(self.image_size, self.widths)
