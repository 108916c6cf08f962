"""Class activation maps and pointing accuracy on models whose maps are known exactly."""

import pytest
import torch
from torch import nn

from gap_study.heads import DenseHead, NINHead, PooledLinearHead
from gap_study.localization import (
    class_activation_maps,
    pointing_accuracy,
    pointing_centre_prior,
    pointing_chance,
)


class IdentityFeatures(nn.Module):
    """A "backbone" that hands the image itself to the head, so CAMs are known exactly."""

    def __init__(self, head):
        super().__init__()
        self.features, self.head = nn.Identity(), head

    def forward(self, x):
        return self.head(self.features(x))


def test_cam_of_a_linear_head_peaks_where_the_weighted_feature_does():
    head = PooledLinearHead("gap", channels=2, num_classes=2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))  # class c reads channel c
    images = torch.zeros(2, 2, 6, 6)
    images[0, 0, 1, 4] = 1.0  # class 0's evidence at (1, 4)
    images[1, 1, 5, 0] = 1.0  # class 1's evidence at (5, 0)
    cams = class_activation_maps(IdentityFeatures(head), images, torch.tensor([0, 1]))
    assert cams.shape == (2, 6, 6)
    assert divmod(int(cams[0].argmax()), 6) == (1, 4) and divmod(int(cams[1].argmax()), 6) == (5, 0)
    inside = torch.tensor([[0, 3, 2, 6], [4, 0, 6, 2]])
    elsewhere = torch.tensor([[3, 0, 6, 3], [4, 0, 6, 2]])
    assert pointing_accuracy(cams, inside) == 1.0
    assert pointing_accuracy(cams, elsewhere) == 0.5


def test_class_map_weights_add_a_pools_features_of_one_channel_and_dense_has_none():
    avgmax = PooledLinearHead("avgmax", channels=3, num_classes=2)
    expected = avgmax.fc.weight[:, :3] + avgmax.fc.weight[:, 3:]
    torch.testing.assert_close(avgmax.class_map_weights(), expected)
    nin = NINHead(channels=3, num_classes=2)
    torch.testing.assert_close(nin.class_map_weights(), nin.class_maps.weight[:, :, 0, 0])
    gem = PooledLinearHead("gem", 3, 2)
    torch.testing.assert_close(gem.class_map_weights(), gem.fc.weight)
    dense = DenseHead(in_features=12, hidden=4, num_classes=2)
    assert not hasattr(dense, "class_map_weights")
    with pytest.raises(ValueError, match="no class activation map"):
        class_activation_maps(IdentityFeatures(dense), torch.zeros(1, 3, 2, 2), torch.tensor([0]))


def test_pointing_chance_is_the_box_share_of_the_canvas():
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 5]])
    assert pointing_chance(boxes, 4) == pytest.approx((4 + 8) / (2 * 16))


def test_centre_prior_counts_the_boxes_holding_the_canvas_centre():
    # on a 4x4 canvas the centre pixel is (2, 2); boxes are (top, left, bottom, right), exclusive
    boxes = torch.tensor([[1, 1, 3, 3], [0, 0, 2, 2], [2, 2, 4, 4], [0, 2, 2, 4]])
    assert pointing_centre_prior(boxes, 4) == 0.5  # the first and third hold (2, 2)
