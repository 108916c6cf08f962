"""Two-object canvases: two test objects of different classes per canvas, at seeded positions,
whole, apart, and with the boxes and classes that two-object pointing scores against."""

import itertools

import numpy as np
import pytest
import torch
from builders import data_set

from gap_study.data import prepare
from gap_study.data.canvas import object_boxes, place_on_canvas, to_float
from gap_study.data.two_objects import crop, fits, place_pair, two_object_canvases
from gap_study.measures.localization import ink_maps, pointing_accuracy
from gap_study.pipeline.params import ParamsError, parse_params


def _apart(a, b) -> bool:
    """Whether boxes ``a`` and ``b`` have at least one empty row or column between them."""
    return a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]


def _objects(sizes, labels, canvas=12):
    """Centred rectangles of the given ``(height, width)``, object ``i`` filled with ``i + 1``:
    every pixel says which object it came from."""
    images = np.stack([place_on_canvas(np.full((1, 1, h, w), i + 1, dtype=np.uint8), canvas)[0]
                       for i, (h, w) in enumerate(sizes)])
    return images, np.asarray(labels, dtype=np.int64), object_boxes(images)


def test_each_canvas_holds_two_whole_objects_of_different_classes_in_disjoint_boxes(digits):
    x, y, boxes = digits.x_pair, digits.y_pair, digits.box_pair
    assert x.shape == (40, 1, 32, 32) and x.dtype == np.uint8
    assert y.shape == (40, 2) and boxes.shape == (40, 2, 4)
    assert (y[:, 0] != y[:, 1]).all()
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2:] <= 32).all()
    assert (boxes[..., 2:] > boxes[..., :2]).all()
    crops_by_class = {}
    for image, box, label in zip(digits.x_test, digits.box_test, digits.y_test, strict=True):
        crops_by_class.setdefault(int(label), []).append(crop(image, box))
    for canvas, labels, pair in zip(x, y, boxes, strict=True):
        assert _apart(pair[0], pair[1])
        rest = canvas.copy()
        for label, box in zip(labels, pair, strict=True):
            piece = crop(canvas, box)
            # the box holds one of the test objects of its class, pixel for pixel
            assert any(piece.shape == c.shape and np.array_equal(piece, c)
                       for c in crops_by_class[int(label)])
            rest[:, box[0]:box[2], box[1]:box[3]] = 0
        assert not rest.any()  # nothing outside the two boxes


def test_the_ink_map_finds_at_most_one_of_the_two_objects_of_a_canvas(digits):
    ink = ink_maps(to_float(digits.x_pair)).repeat_interleave(2, dim=0)
    boxes = torch.as_tensor(digits.box_pair).reshape(-1, 4)
    assert 0.3 < pointing_accuracy(ink, boxes) <= 0.5  # one peak; it lands on an object


def test_the_boxes_are_each_objects_tight_box_and_carry_its_label():
    images, labels, boxes = _objects([(3, 2), (2, 4), (4, 3), (1, 1)], [0, 1, 1, 2])
    x, y, pairs = two_object_canvases(images, labels, boxes, 30, seed=0)
    for canvas, pair_labels, pair in zip(x, y, pairs, strict=True):
        for label, box in zip(pair_labels, pair, strict=True):
            piece = crop(canvas, box)
            source = int(piece[0, -1, -1]) - 1  # the fill says which object this is
            assert label == labels[source]
            assert piece.shape[1:] == tuple(boxes[source, 2:] - boxes[source, :2])
            np.testing.assert_array_equal(piece, crop(images[source], boxes[source]))
            single = np.zeros_like(canvas)
            single[:, box[0]:box[2], box[1]:box[3]] = piece
            assert object_boxes(single[None]).tolist() == [list(box)]


def test_positions_are_fixed_by_the_seed_and_change_with_it(digits):
    again = data_set(two_objects=40)
    for field in ("x_pair", "y_pair", "box_pair"):
        assert getattr(again, field).tobytes() == getattr(digits, field).tobytes()
    images, labels, boxes = digits.x_test, digits.y_test, digits.box_test
    first = two_object_canvases(images, labels, boxes, 40, seed=0)
    other = two_object_canvases(images, labels, boxes, 40, seed=1)
    np.testing.assert_array_equal(first[2], digits.box_pair)
    assert not np.array_equal(other[2], first[2])


def test_two_object_canvases_leave_every_other_array_unchanged(digits):
    without = data_set(two_objects=0)
    assert without.x_pair.shape == (0, 1, 32, 32) and without.box_pair.shape == (0, 2, 4)
    for field in ("x_train", "y_train", "box_train", "x_val", "y_val", "box_val", "x_test",
                  "y_test", "box_test"):
        assert getattr(without, field).tobytes() == getattr(digits, field).tobytes()


def test_placement_covers_exactly_the_placements_that_keep_the_boxes_apart():
    first, second, canvas = (2, 3), (3, 2), 6
    valid = set()
    for t1, l1, t2, l2 in itertools.product(range(5), range(4), range(4), range(5)):
        if _apart((t1, l1, t1 + 2, l1 + 3), (t2, l2, t2 + 3, l2 + 2)):
            valid.add(((t1, l1), (t2, l2)))
    rng = np.random.default_rng(0)
    drawn = [place_pair(first, second, canvas, rng) for _ in range(6000)]
    assert set(drawn) == valid
    counts = np.array([drawn.count(p) for p in valid])
    assert counts.max() < 3 * counts.min()  # uniform over the valid placements


def test_two_objects_fit_side_by_side_or_one_above_the_other_with_a_pixel_between():
    assert fits((10, 9), (10, 10), 20) and not fits((10, 10), (10, 10), 20)
    assert fits((9, 20), (10, 20), 20)  # one above the other
    assert not fits((32, 32), (32, 32), 48) and fits((32, 32), (32, 32), 65)
    with pytest.raises(ValueError, match="cannot lie apart"):
        place_pair((10, 10), (10, 10), 20, np.random.default_rng(0))


def test_objects_that_never_fit_apart_name_the_key_to_set():
    images, labels, boxes = _objects([(12, 12), (12, 12)], [0, 1], canvas=16)
    with pytest.raises(ValueError, match=r"data\.two_objects: 100 pairs .*did not fit apart "
                                         r"on the 16x16 canvas.*set data\.two_objects: 0"):
        two_object_canvases(images, labels, boxes, 3, seed=0)
    one_class = _objects([(2, 2), (2, 2)], [4, 4])
    with pytest.raises(ValueError, match=r"at least two classes.*data\.two_objects: 0"):
        two_object_canvases(*one_class, 3, seed=0)


def test_a_negative_count_is_refused_before_any_data_is_read(monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("the data was read before the count was checked")

    monkeypatch.setattr(prepare, "digits_objects", no_work)
    monkeypatch.setattr(prepare, "load_raw", no_work)
    with pytest.raises(ValueError, match=r"data\.two_objects = -1: .* 0 \(none\) or more"):
        data_set(canvas=20, digits_size=10, two_objects=-1)


def test_params_refuse_a_negative_count_and_photos_that_cannot_lie_apart(params_raw):
    data = params_raw["data"]
    with pytest.raises(ParamsError, match=r"data\.two_objects = -3: .*greater than or equal "
                                          r"to 0"):
        parse_params({**params_raw, "data": {**data, "two_objects": -3}})
    cifar = {**data, "name": "cifar10", "two_objects": 400}
    with pytest.raises(ParamsError, match=r"data\.two_objects = 400: two 32x32 cifar10 photos "
                                          r".*48-pixel canvas .*set data\.two_objects: 0 for "
                                          r"cifar10"):
        parse_params({**params_raw, "data": cifar})
    fine = parse_params({**params_raw, "data": {**cifar, "two_objects": 0}})
    assert fine.data.two_objects == 0
