"""The torch-free description of the model agrees with the networks built from it."""

import pytest
import torch

from gap_study.nets.architecture import (
    FACTORIAL,
    HEAD_NAMES,
    ModelConfig,
    feature_map_shape,
    has_class_map,
    pools_globally,
    total_stride,
)
from gap_study.nets.models import build_model


def test_backbone_halves_the_map_between_blocks_and_keeps_the_last():
    assert feature_map_shape(32, (16, 32, 64)) == (64, 8, 8)
    assert feature_map_shape(28, (8,)) == (8, 28, 28)
    assert feature_map_shape(32, (8, 8, 8, 8)) == (8, 4, 4)
    with pytest.raises(ValueError, match="too small"):
        feature_map_shape(2, (8, 8, 8))


@pytest.mark.parametrize("downsample", ["max", "blurmax", "aps"])
@pytest.mark.parametrize("widths", [(8,), (4, 8), (4, 8, 8), (2, 2, 2, 2)])
def test_total_stride_is_how_far_the_built_backbone_downsamples(widths, downsample):
    model = build_model(ModelConfig(head="gap", in_channels=1, image_size=32, num_classes=3,
                                    widths=widths, downsample=downsample))
    features = model.features(torch.zeros(1, 1, 32, 32))
    assert features.shape[-1] == 32 // total_stride(widths)
    assert ModelConfig("gap", 1, 32, 3, widths).feature_map_shape == tuple(features.shape[1:])


@pytest.mark.parametrize("head", HEAD_NAMES)
def test_a_head_has_class_map_weights_exactly_when_the_architecture_says_it_has_a_map(head):
    model = build_model(ModelConfig(head=head, in_channels=1, image_size=16, num_classes=3,
                                    widths=(4, 8), dense_hidden=5))
    assert hasattr(model.head, "class_map_weights") == has_class_map(head)
    assert has_class_map(head) == (head in {"gap", "gmp", "gsp", "gem", "lse", "avgmax", "nin",
                                            "gsp_scaled"})


def test_unknown_heads_are_refused_with_the_allowed_names():
    with pytest.raises(ValueError, match="unknown head 'gapp'; allowed: dense, dense_dropout, "):
        has_class_map("gapp")
    with pytest.raises(ValueError, match="unknown head 'gapp'"):
        ModelConfig(head="gapp", in_channels=1, image_size=8, num_classes=2)


def test_heads_that_pool_globally_are_those_that_drop_every_position():
    assert [h for h in HEAD_NAMES if not pools_globally(h)] == ["dense", "dense_dropout",
                                                                "linear", "avg2x2_dense"]


def test_the_factorial_crosses_flatten_and_global_average_with_a_hidden_layer():
    cells = {key: build_model(ModelConfig(head, 1, 16, 3, widths=(4, 8), dense_hidden=6)).head
             for key, head in FACTORIAL.items()}
    hidden = {key: any(isinstance(m, torch.nn.ReLU) for m in head.modules())
              for key, head in cells.items()}
    assert hidden == {key: key[1] for key in FACTORIAL}
    assert {pools_globally(FACTORIAL[key]) for key in FACTORIAL if key[0] == "global average"} \
        == {True}
