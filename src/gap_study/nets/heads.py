"""The classifier heads, one small module each, and ``make_head``, which builds the head a
``ModelConfig`` names (``docs/study.md``, "Heads").

Every head maps the backbone's ``(N, C, H, W)`` map to ``(N, K)`` logits. Heads linear on
pooled maps give their class activation map weights (``class_map_weights``).
"""

from __future__ import annotations

from torch import Tensor, nn

from gap_study.nets.architecture import ModelConfig
from gap_study.nets.pooling import GlobalAvgPool, global_avg_pool, make_global_pool

__all__ = [
    "DenseHead",
    "HiddenLayer",
    "LinearHead",
    "NINHead",
    "PooledHiddenHead",
    "PooledLinearHead",
    "make_head",
]


class HiddenLayer(nn.Module):
    """``Linear(in, hidden)``, ReLU, ``Linear(hidden, K)``, with dropout before each linear
    layer when ``dropout > 0`` (none at all otherwise, so no random number is drawn)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.drop_in = nn.Dropout(dropout) if dropout else nn.Identity()
        self.hidden = nn.Linear(in_features, hidden)
        self.relu = nn.ReLU(inplace=True)
        self.drop_hidden = nn.Dropout(dropout) if dropout else nn.Identity()
        self.fc = nn.Linear(hidden, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc(self.drop_hidden(self.relu(self.hidden(self.drop_in(x)))))


class DenseHead(nn.Module):
    """Flatten, then ``HiddenLayer`` (``dense``; ``dense_dropout`` with dropout 0.5, as Network
    In Network's "fully connected + dropout"); with ``cell_pool=2`` the map is first averaged
    over 2x2 cells (``avg2x2_dense``)."""

    def __init__(self, in_features: int, hidden: int, num_classes: int, *,
                 dropout: float = 0.0, cell_pool: int = 1) -> None:
        super().__init__()
        self.cell_pool = nn.AvgPool2d(cell_pool) if cell_pool > 1 else nn.Identity()
        self.flatten = nn.Flatten()
        self.classifier = HiddenLayer(in_features, hidden, num_classes, dropout)

    def forward(self, f: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.cell_pool(f)))


class LinearHead(nn.Module):
    """Flatten, then ``Linear(C*H*W, K)``: no hidden layer."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_features, num_classes)

    def forward(self, f: Tensor) -> Tensor:
        return self.fc(self.flatten(f))


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


class PooledHiddenHead(nn.Module):
    """Global average pooling, then ``HiddenLayer`` (``gap_hidden``): pooling with the
    dense head's capacity."""

    def __init__(self, channels: int, hidden: int, num_classes: int) -> None:
        super().__init__()
        self.pool = GlobalAvgPool()
        self.classifier = HiddenLayer(channels, hidden, num_classes)

    def forward(self, f: Tensor) -> Tensor:
        return self.classifier(self.pool(f))


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


def make_head(config: ModelConfig) -> nn.Module:
    """The head ``config.head`` names, sized for the backbone's last map."""
    channels, height, width = config.feature_map_shape
    hidden, classes = config.dense_hidden, config.num_classes
    if config.head in ("dense", "dense_dropout"):
        dropout = config.dropout if config.head == "dense_dropout" else 0.0
        return DenseHead(channels * height * width, hidden, classes, dropout=dropout)
    if config.head == "avg2x2_dense":
        return DenseHead(channels * (height // 2) * (width // 2), hidden, classes, cell_pool=2)
    if config.head == "linear":
        return LinearHead(channels * height * width, classes)
    if config.head == "gap_hidden":
        return PooledHiddenHead(channels, hidden, classes)
    if config.head == "nin":
        return NINHead(channels, classes)
    pool = "gsp" if config.head == "gsp_scaled" else config.head
    return PooledLinearHead(pool, channels, classes, gem_p=config.gem_p, lse_r=config.lse_r)
