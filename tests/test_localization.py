"""Class activation maps and pointing accuracy on models whose maps are known exactly."""

import math

import pytest
import torch
from builders import BATCH
from torch import nn

from gap_study.measures.localization import (
    TWO_OBJECT_METRICS,
    alone,
    class_activation_maps,
    grad_cam,
    ink_maps,
    pointing_accuracy,
    pointing_centre_prior,
    pointing_chance,
    pointing_hits,
    recognised_alone,
    two_object_hits,
    two_object_metrics,
)
from gap_study.nets.heads import DenseHead, LinearHead, NINHead, PooledLinearHead


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
    cams = class_activation_maps(IdentityFeatures(head), images, torch.tensor([0, 1]),
                                 batch_size=BATCH)
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
        class_activation_maps(IdentityFeatures(dense), torch.zeros(1, 3, 2, 2), torch.tensor([0]),
                              batch_size=BATCH)


def test_pointing_chance_is_the_box_share_of_the_canvas():
    boxes = torch.tensor([[0, 0, 2, 2], [1, 1, 3, 5]])
    assert pointing_chance(boxes, 4) == pytest.approx((4 + 8) / (2 * 16))


def test_centre_prior_counts_the_boxes_holding_the_canvas_centre():
    # on a 4x4 canvas the centre pixel is (2, 2); boxes are (top, left, bottom, right), exclusive
    boxes = torch.tensor([[1, 1, 3, 3], [0, 0, 2, 2], [2, 2, 4, 4], [0, 2, 2, 4]])
    assert pointing_centre_prior(boxes, 4) == 0.5  # the first and third hold (2, 2)


FEATURES = torch.randn(5, 3, 6, 6, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)
CLASSES = torch.tensor([0, 1, 2, 3, 0])


@pytest.mark.parametrize(("pool", "factor"), [("gap", 1 / 36), ("gsp", 1.0)])
def test_grad_cam_of_a_head_linear_on_pooled_features_is_its_cam_up_to_a_positive_factor(
        pool, factor):
    model = IdentityFeatures(PooledLinearHead(pool, channels=3, num_classes=4)).double()
    cams = class_activation_maps(model, FEATURES, CLASSES, batch_size=BATCH)
    grads = grad_cam(model, FEATURES, CLASSES, batch_size=BATCH)
    torch.testing.assert_close(grads, cams.clamp(min=0) * factor)


def test_grad_cam_of_the_linear_head_weights_channels_by_their_mean_classifier_weight():
    # score_c = sum_kxy W[c, k, x, y] f_k(x, y) + b_c, so a_k = mean_xy W[c, k, x, y]
    head = LinearHead(in_features=3 * 36, num_classes=4).double()
    weights = head.fc.weight.detach().reshape(4, 3, 6, 6).mean(dim=(2, 3))[CLASSES]
    expected = torch.einsum("nk,nkxy->nxy", weights, FEATURES).clamp(min=0)
    torch.testing.assert_close(grad_cam(IdentityFeatures(head), FEATURES, CLASSES,
                                        batch_size=BATCH), expected)


def test_grad_cam_exists_for_the_dense_head_and_is_computed_in_batches():
    model = IdentityFeatures(DenseHead(in_features=3 * 36, hidden=7, num_classes=4)).double()
    maps = grad_cam(model, FEATURES, CLASSES, batch_size=BATCH)
    assert maps.shape == (5, 6, 6) and bool((maps >= 0).all()) and float(maps.max()) > 0
    torch.testing.assert_close(grad_cam(model, FEATURES, CLASSES, batch_size=2), maps)


def test_ink_map_peaks_on_the_object_of_a_blank_canvas_whatever_its_class():
    canvas = torch.zeros(2, 1, 10, 10)
    canvas[0, 0, 1:4, 6:9] = 1.0
    canvas[1, 0, 7:9, 2:4] = 0.5
    maps = ink_maps(canvas)
    assert maps.shape == (2, 10, 10)
    assert pointing_accuracy(maps, torch.tensor([[1, 6, 4, 9], [7, 2, 9, 4]])) == 1.0
    assert pointing_accuracy(maps, torch.tensor([[4, 0, 10, 6], [0, 4, 6, 10]])) == 0.0


def _two_objects():
    """One 8x8 canvas with two channels: class 0's object (channel 0, ink 1.0) in box
    ``(1, 1, 3, 3)``, class 1's (channel 1, ink 0.5) in box ``(5, 4, 7, 7)``."""
    canvas = torch.zeros(1, 2, 8, 8)
    canvas[0, 0, 1:3, 1:3] = 1.0
    canvas[0, 1, 5:7, 4:7] = 0.5
    return canvas, torch.tensor([[0, 1]]), torch.tensor([[[1, 1, 3, 3], [5, 4, 7, 7]]])


def _reading(weights):
    """A ``gap`` head on the image itself whose class ``c`` reads the channels by
    ``weights[c]``."""
    head = PooledLinearHead("gap", channels=2, num_classes=2)
    with torch.no_grad():
        head.fc.weight.copy_(torch.tensor(weights))
    return IdentityFeatures(head)


def test_two_object_pointing_asks_each_class_map_for_its_own_box():
    images, labels, boxes = _two_objects()
    own = two_object_metrics(_reading([[1.0, 0.0], [0.0, 1.0]]), images, labels, boxes,
                             batch_size=BATCH)
    assert own["pointing_two_objects"] == own["pointing_gradcam_two_objects"] == 1.0
    swapped = two_object_metrics(_reading([[0.0, 1.0], [1.0, 0.0]]), images, labels, boxes,
                                 batch_size=BATCH)
    assert swapped["pointing_two_objects"] == swapped["pointing_gradcam_two_objects"] == 0.0
    # both classes' maps peak on class 0's object: a hit for class 0, a miss for class 1
    model = _reading([[1.0, 0.0], [1.0, 0.0]])
    maps = class_activation_maps(model, images.repeat(2, 1, 1, 1), labels[0], batch_size=BATCH)
    assert pointing_accuracy(maps[:1], boxes[0, :1]) == 1.0
    assert pointing_accuracy(maps[1:], boxes[0, 1:]) == 0.0
    assert two_object_metrics(model, images, labels, boxes,
                              batch_size=BATCH)["pointing_two_objects"] == 0.5


def test_two_object_references_the_ink_map_at_most_half_the_centre_prior_and_chance():
    images, labels, boxes = _two_objects()
    row = two_object_metrics(_reading([[1.0, 0.0], [0.0, 1.0]]), images, labels, boxes,
                             with_maps=False, batch_size=BATCH)
    assert math.isnan(row["pointing_two_objects"])  # a head without CAM
    assert row["pointing_gradcam_two_objects"] == 1.0  # Grad-CAM exists for every head
    assert row["pointing_ink_two_objects"] == 0.5  # one peak, on the object with more ink
    assert row["pointing_centre_prior_two_objects"] == 0.0  # (4, 4) is in neither box
    assert row["pointing_chance_two_objects"] == pytest.approx((4 + 6) / (2 * 64))
    empty = two_object_metrics(_reading([[1.0, 0.0], [0.0, 1.0]]), images[:0], labels[:0],
                               boxes[:0], batch_size=BATCH)
    assert set(empty) == set(TWO_OBJECT_METRICS) and all(map(math.isnan, empty.values()))


def test_a_map_with_the_same_value_everywhere_points_nowhere():
    flat = torch.zeros(2, 4, 4)  # a Grad-CAM whose ReLU cut everything; argmax says (0, 0)
    assert pointing_accuracy(flat, torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]])) == 0.0
    peaked = flat.clone()
    peaked[:, 0, 0] = 1.0
    assert pointing_accuracy(peaked, torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3]])) == 0.5


def test_two_object_hits_are_per_object_canvas_major_and_average_to_the_metrics():
    images, labels, boxes = _two_objects()
    model = _reading([[1.0, 0.0], [1.0, 0.0]])  # both maps peak on class 0's object
    hits = two_object_hits(model, images, labels, boxes, batch_size=BATCH)
    assert hits["pointing_two_objects"].tolist() == [True, False]  # entry 2 i + j
    assert hits["pointing_ink_two_objects"].tolist() == [True, False]
    row = two_object_metrics(model, images, labels, boxes, batch_size=BATCH)
    assert {name: values.mean() for name, values in hits.items()} \
        == {name: row[name] for name in hits}
    assert "pointing_two_objects" not in two_object_hits(model, images, labels, boxes,
                                                         with_maps=False, batch_size=BATCH)
    assert two_object_hits(model, images[:0], labels[:0], boxes[:0], batch_size=BATCH) == {}


def test_pointing_hits_mark_each_map_whose_peak_is_in_its_box():
    peaked = torch.zeros(3, 4, 4)
    peaked[:2, 0, 0] = 1.0  # the third map is flat: it points nowhere
    hits = pointing_hits(peaked, torch.tensor([[0, 0, 2, 2], [1, 1, 3, 3], [0, 0, 4, 4]]))
    assert hits.dtype == bool and hits.tolist() == [True, False, False]


def _unbiased(weights):
    """``_reading`` without the classifier's bias: the class is the channel with more ink."""
    model = _reading(weights)
    with torch.no_grad():
        model.head.fc.bias.zero_()
    return model


def test_each_object_alone_is_the_canvas_with_only_its_own_box_kept():
    images, _, boxes = _two_objects()
    single = alone(images, boxes)
    assert single.shape == (2, 2, 8, 8)
    expected = torch.zeros(2, 2, 8, 8)
    expected[0, 0, 1:3, 1:3] = 1.0  # canvas 0, object 0: class 0's ink, nothing else
    expected[1, 1, 5:7, 4:7] = 0.5  # canvas 0, object 1
    assert torch.equal(single, expected)
    assert torch.equal(single.sum(dim=0, keepdim=True), images)  # the two make the canvas


@pytest.mark.parametrize("weights, recognised", [
    ([[1.0, 0.0], [0.0, 1.0]], [True, True]),  # each class reads its own channel
    ([[0.0, 1.0], [1.0, 0.0]], [False, False]),  # each reads the other's
    ([[1.0, 0.0], [1.0, 0.0]], [True, False]),  # both read channel 0: a tie goes to class 0
])
def test_an_object_counts_as_recognised_when_the_model_classifies_it_alone(weights, recognised):
    images, labels, boxes = _two_objects()
    assert recognised_alone(_unbiased(weights), images, labels, boxes,
                            batch_size=BATCH).tolist() == recognised


def test_pointing_on_recognised_objects_leaves_the_others_out():
    images, labels, boxes = _two_objects()
    # both maps peak on class 0's object, which alone is recognised: 1 of 2 hits overall,
    # 1 of 1 among the recognised objects; the ink map hits that object too
    row = two_object_metrics(_unbiased([[1.0, 0.0], [1.0, 0.0]]), images, labels, boxes,
                             batch_size=BATCH)
    assert row["recognised_two_objects"] == 0.5
    assert row["pointing_two_objects"] == row["pointing_gradcam_two_objects"] == 0.5
    assert row["pointing_two_objects_recognised"] == 1.0
    assert row["pointing_gradcam_two_objects_recognised"] == 1.0
    assert row["pointing_ink_two_objects_recognised"] == 1.0
    # nothing recognised: the conditioned scores are undefined, not zero
    none = two_object_metrics(_unbiased([[0.0, 1.0], [1.0, 0.0]]), images, labels, boxes,
                              batch_size=BATCH)
    assert none["recognised_two_objects"] == 0.0
    assert math.isnan(none["pointing_gradcam_two_objects_recognised"])
    # a head without CAM has no conditioned CAM score either
    no_cam = two_object_metrics(_unbiased([[1.0, 0.0], [0.0, 1.0]]), images, labels, boxes,
                                with_maps=False, batch_size=BATCH)
    assert math.isnan(no_cam["pointing_two_objects_recognised"])
    assert no_cam["pointing_gradcam_two_objects_recognised"] == 1.0

