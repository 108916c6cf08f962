"""A small VGG-style backbone with interchangeable classifier heads (``gap_study.nets.heads``;
``docs/study.md``, "Heads"), BatchNorm folding for evaluation, and parameter counts with
the study's formulas."""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from gap_study.nets.architecture import ModelConfig
from gap_study.nets.downsample import make_downsample
from gap_study.nets.heads import make_head
from gap_study.nets.padding import CircularConv2d

__all__ = [
    "ClassifierNet",
    "build_model",
    "dense_head_param_count",
    "fold_batch_norm",
    "head_param_count",
    "param_count",
    "pooled_head_param_count",
]


def make_backbone(config: ModelConfig) -> nn.Sequential:
    """VGG-style blocks ``conv3x3 -> BatchNorm -> ReLU``, the map halved between blocks by
    ``config.downsample`` (``gap_study.nets.downsample``), every layer padded in ``config.padding``.

    ``(N, in_channels, S, S) -> (N, widths[-1], S / 2**(len(widths)-1), ...)``.
    The last block is not pooled, so the heads see the largest map the backbone makes.
    """
    layers: list[nn.Module] = []
    channels = config.in_channels
    for i, width in enumerate(config.widths):
        if i > 0:
            layers.append(make_downsample(config.downsample, channels, config.blur_size,
                                          config.padding))
        layers += [
            make_conv(channels, width, config.padding),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
    return nn.Sequential(*layers)


def make_conv(in_channels: int, out_channels: int, padding: str) -> nn.Conv2d:
    """The backbone's 3x3 convolution without bias, padded by one in ``padding``: zeros inside
    the convolution, reflect by ``F.pad`` (both keep channels_last), circular by
    ``CircularConv2d`` (torch's own leaves channels_last; ``gap_study.nets.padding``)."""
    if padding == "circular":
        return CircularConv2d(in_channels, out_channels, 3, padding=1, bias=False)
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1, bias=False,
                     padding_mode=padding)


class ClassifierNet(nn.Module):
    """``features`` (the shared backbone) followed by ``head``; ``(N, C_in, S, S) -> (N, K)``.

    ``gsp_scaled`` is ``gsp`` made to train exactly as ``gap`` (the write-up's "treated as a
    sum" note as an experiment): global sum pooling is GAP times ``H*W``, so its classifier's
    weights start divided by ``H*W`` and Adam updates them with the learning rate divided and
    eps multiplied by ``H*W`` (``parameter_groups``); every logit and update then equals
    ``gap``'s up to rounding.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.features = make_backbone(config)
        self.head = make_head(config)
        _, height, width = config.feature_map_shape
        # the factor by which gsp_scaled's classifier weights are scaled; 1 for every other head
        self.classifier_scale = 1.0 / (height * width) if config.head == "gsp_scaled" else 1.0
        if self.classifier_scale != 1.0:
            with torch.no_grad():
                self.head.fc.weight.mul_(self.classifier_scale)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))

    def parameter_groups(self, lr: float, weight_decay: float,
                         eps: float = 1e-8) -> list[dict[str, Any]]:
        """Adam's parameter groups: all parameters in one, except ``gsp_scaled``'s classifier
        weights, whose learning rate, eps and weight decay are scaled to train as ``gap``."""
        if self.classifier_scale == 1.0:
            return [{"params": list(self.parameters())}]
        scale, scaled = self.classifier_scale, self.head.fc.weight
        rest = [p for p in self.parameters() if p is not scaled]
        return [{"params": rest},
                {"params": [scaled], "lr": lr * scale, "eps": eps / scale,
                 "weight_decay": weight_decay / scale**2}]


def build_model(config: ModelConfig) -> ClassifierNet:
    """A freshly initialised model (seed torch before calling for reproducible weights)."""
    return ClassifierNet(config)


def fold_batch_norm(model: ClassifierNet) -> ClassifierNet:
    """A copy of ``model`` for inference, each ``BatchNorm2d`` of the backbone folded into the
    convolution before it (``torch.nn.utils.fusion.fuse_conv_bn_eval``), in eval mode.

    Same function as ``model`` in eval mode, ``(N, C_in, S, S) -> (N, K)``: outputs agree up to
    float rounding (about 1e-6). It is evaluation's model because a BatchNorm in eval mode is
    a separate pass over every feature map (docs/operations.md, "Performance", has what that
    costs). Count parameters on ``model``: folding removes BatchNorm's and adds convolution
    biases.
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
