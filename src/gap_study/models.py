"""A small VGG-style backbone with interchangeable classifier heads (``docs/study.md``,
"Heads").

Every head sits on the same backbone output ``f`` of shape ``(N, C, H, W)``:

- ``dense``: flatten, ``Linear(C*H*W, hidden)``, ReLU, ``Linear(hidden, K)``
- ``gap`` / ``gmp`` / ``gsp``: global average / max / sum pooling, then ``Linear(C, K)``
- ``gem`` (learnable exponent), ``lse`` (temperature ``r``): pooling, then ``Linear(C, K)``
- ``avgmax``: GAP and GMP concatenated, then ``Linear(2C, K)``
- ``nin``: ``Conv2d(C, K, 1)`` to one map per class, then GAP gives the logits (Lin et al. 2014)
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from gap_study.architecture import HEAD_NAMES, ModelConfig
from gap_study.pooling import global_avg_pool, make_global_pool

__all__ = [
    "ClassifierNet",
    "DenseHead",
    "NINHead",
    "PooledLinearHead",
    "build_model",
    "dense_head_param_count",
    "fold_batch_norm",
    "head_param_count",
    "param_count",
    "pooled_head_param_count",
    "study_head_param_count",
]


def make_backbone(in_channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """VGG-style blocks ``conv3x3 -> BatchNorm -> ReLU``, a 2x2 max-pool between blocks.

    ``(N, in_channels, S, S) -> (N, widths[-1], S / 2**(len(widths)-1), ...)``.
    The last block is not pooled, so the heads see the largest map the backbone makes.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for i, width in enumerate(widths):
        if i > 0:
            layers.append(nn.MaxPool2d(2))
        layers += [
            nn.Conv2d(channels, width, kernel_size=3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
    return nn.Sequential(*layers)


class DenseHead(nn.Module):
    """Flatten ``(N, C, H, W)``, ``Linear(C*H*W, hidden)``, ReLU, ``Linear(hidden, K)``.

    Output ``(N, K)`` logits.
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.hidden = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(self.relu(self.hidden(self.flatten(f))))


class PooledLinearHead(nn.Module):
    """Global pooling ``(N, C, H, W) -> (N, m C)``, then ``Linear(m C, K)`` -> ``(N, K)``, with
    ``m`` the pool's ``feat_mult()`` (2 for ``avgmax``, else 1)."""

    def __init__(self, pool_type: str, channels: int, num_classes: int, *, gem_p: float = 3.0,
                 lse_r: float = 10.0) -> None:
        super().__init__()
        self.pool = make_global_pool(pool_type, gem_p=gem_p, lse_r=lse_r)
        self.fc = nn.Linear(self.pool.feat_mult() * channels, num_classes)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(self.pool(f))

    def class_map_weights(self) -> Tensor:
        """``w_ck`` of the class activation map ``M_c = sum_k w_ck f_k``, ``(K, C)``: a pool
        that gives several features per channel (``avgmax``) has several weights multiplying
        the same ``f_k``, and they add."""
        weight = self.fc.weight
        return weight.view(len(weight), self.pool.feat_mult(), -1).sum(dim=1)


class NINHead(nn.Module):
    """Network-in-network head: ``Conv2d(C, K, 1)`` gives one map per class ``(N, K, H, W)``;
    their global average is the logits ``(N, K)``. No linear layer after the pooling."""

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.class_maps = nn.Conv2d(channels, num_classes, kernel_size=1)

    def forward(self, f: Tensor) -> Tensor:
        return global_avg_pool(self.class_maps(f))

    def class_map_weights(self) -> Tensor:
        """The 1x1 convolution's weights ``(K, C)``: its maps are the class activation maps."""
        return self.class_maps.weight[:, :, 0, 0]


class ClassifierNet(nn.Module):
    """``features`` (the shared backbone) followed by ``head``; ``(N, C_in, S, S) -> (N, K)``."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.features = make_backbone(config.in_channels, config.widths)
        channels, height, width = config.feature_map_shape
        if config.head == "dense":
            self.head: nn.Module = DenseHead(channels * height * width, config.dense_hidden,
                                             config.num_classes)
        elif config.head == "nin":
            self.head = NINHead(channels, config.num_classes)
        else:
            self.head = PooledLinearHead(config.head, channels, config.num_classes,
                                         gem_p=config.gem_p, lse_r=config.lse_r)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def build_model(config: ModelConfig) -> ClassifierNet:
    """A freshly initialised model (seed torch before calling for reproducible weights)."""
    return ClassifierNet(config)


def fold_batch_norm(model: ClassifierNet) -> ClassifierNet:
    """A copy of ``model`` for inference, each ``BatchNorm2d`` of the backbone folded into the
    convolution before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``), in eval mode.

    Same function as ``model`` in eval mode, ``(N, C_in, S, S) -> (N, K)``: outputs agree up to
    float rounding (about 1e-6). It is evaluation's model because a BatchNorm in eval mode is
    a separate pass over every feature map (README, "Performance", has what that costs). Count
    parameters on ``model``: folding removes BatchNorm's and adds convolution biases.
    """
    folded = copy.deepcopy(model).eval()
    kept: list[nn.Module] = []
    for layer in folded.features:
        if isinstance(layer, nn.BatchNorm2d) and kept and isinstance(kept[-1], nn.Conv2d):
            kept[-1] = fuse_conv_bn_eval(kept[-1], layer)
        else:
            kept.append(layer)
    folded.features = nn.Sequential(*kept)
    return folded.to(memory_format=torch.channels_last)


def param_count(module: nn.Module, trainable_only: bool = True) -> int:
    """Number of (trainable) parameters in ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


def head_param_count(model: ClassifierNet) -> int:
    """Trainable parameters of the classifier head alone."""
    return param_count(model.head)


def dense_head_param_count(channels: int, height: int, width: int, hidden: int,
                           num_classes: int) -> int:
    """``docs/study.md`` formula for ``dense``: ``C*H*W*hidden + hidden + hidden*K + K``."""
    return channels * height * width * hidden + hidden + hidden * num_classes + num_classes


def pooled_head_param_count(channels: int, num_classes: int) -> int:
    """``docs/study.md`` formula for ``gap``/``gmp``/``gsp``/``lse``/``nin``: ``C*K + K``."""
    return channels * num_classes + num_classes


def study_head_param_count(head: str, channels: int, height: int, width: int, hidden: int,
                           num_classes: int) -> int:
    """Trainable head parameters by the table of ``docs/study.md`` ("Heads"), for any head."""
    if head == "dense":
        return dense_head_param_count(channels, height, width, hidden, num_classes)
    if head == "avgmax":
        return pooled_head_param_count(2 * channels, num_classes)
    if head == "gem":
        return pooled_head_param_count(channels, num_classes) + 1  # the learnable p
    if head in HEAD_NAMES:
        return pooled_head_param_count(channels, num_classes)
    raise ValueError(f"unknown head {head!r}; allowed: {', '.join(HEAD_NAMES)}")
