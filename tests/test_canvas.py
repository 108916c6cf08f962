import warnings

import numpy as np
import pytest
import torch
from builders import data_set, put, small_cifar_tarball, use_files

from gap_study.data.canvas import (
    PreparedDataError,
    load_prepared,
    object_boxes,
    place_on_canvas,
    save_prepared,
    shift,
    shift_each,
    shift_margin,
    to_float,
)
from gap_study.data.prepare import DataSizeWarning, prepare_study_dataset
from gap_study.data.sources import CIFAR10_TARBALL
from gap_study.pipeline.params import load_params


def test_shift_moves_content_right_and_down_with_zero_fill():
    image = np.arange(1, 10, dtype=np.uint8).reshape(1, 1, 3, 3)
    assert shift(image, 1, 0)[0, 0].tolist() == [[0, 1, 2], [0, 4, 5], [0, 7, 8]]
    assert shift(image, 0, -1)[0, 0].tolist() == [[4, 5, 6], [7, 8, 9], [0, 0, 0]]
    assert shift(image, -1, 1)[0, 0].tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    assert shift(image, 0, 0)[0, 0].tolist() == image[0, 0].tolist()
    assert not shift(image, 3, 0).any() and not shift(image, 0, -5).any()


def test_shift_gives_the_same_result_on_numpy_and_torch_and_keeps_the_input():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 255, size=(4, 3, 9, 11), dtype=np.uint8)
    before = images.copy()
    for dx, dy in [(2, -3), (-4, 1), (0, 8), (10, 0)]:
        np.testing.assert_array_equal(shift(torch.from_numpy(images), dx, dy).numpy(),
                                      shift(images, dx, dy))
    np.testing.assert_array_equal(images, before)


def test_shift_within_the_margin_is_undone_by_the_opposite_shift():
    objects = np.full((2, 1, 4, 4), 200, dtype=np.uint8)
    canvas = place_on_canvas(objects, 10)
    margin = shift_margin(object_boxes(canvas), 10)
    assert margin == 3
    for dx, dy in [(3, 3), (-3, 2), (0, -3)]:
        moved = shift(canvas, dx, dy)
        assert moved.sum() == canvas.sum()  # nothing fell off the canvas
        np.testing.assert_array_equal(shift(moved, -dx, -dy), canvas)


def test_place_on_canvas_centres_the_object_and_rejects_a_small_canvas():
    objects = np.ones((1, 1, 2, 2), dtype=np.uint8)
    canvas = place_on_canvas(objects, 6)
    assert canvas.shape == (1, 1, 6, 6)
    assert object_boxes(canvas).tolist() == [[2, 2, 4, 4]]
    with pytest.raises(ValueError, match="canvas 1 is smaller than the 2x2 object"):
        place_on_canvas(objects, 1)


def test_object_boxes_are_tight_with_exclusive_ends():
    images = np.zeros((3, 2, 5, 6), dtype=np.uint8)
    images[0, 1, 1, 2] = 9
    images[1, 0, 0:4, 3:6] = 1
    assert object_boxes(images).tolist() == [[1, 2, 2, 3], [0, 3, 4, 6], [0, 0, 0, 0]]


def test_prepared_digits_are_a_stratified_fixed_split_on_the_canvas(digits):
    # 1,797 digits: 450 for testing, then a tenth of the other 1,347 for validation
    assert digits.x_test.shape == (450, 1, 32, 32) and digits.x_val.shape == (135, 1, 32, 32)
    assert digits.x_train.shape == (1212, 1, 32, 32)
    assert digits.x_train.dtype == np.uint8 and digits.y_train.dtype == np.int64
    assert digits.num_classes == 10 and digits.in_channels == 1 and digits.image_size == 32
    # stratified: every class keeps its share of the test and validation sets within 2 points
    everything = np.concatenate([digits.y_train, digits.y_val, digits.y_test])
    share = np.bincount(digits.y_test) / np.bincount(everything)
    assert np.all(np.abs(share - 0.25) < 0.02)
    share = np.bincount(digits.y_val) / np.bincount(np.concatenate([digits.y_train,
                                                                    digits.y_val]))
    assert np.all(np.abs(share - 0.1) < 0.02)
    assert digits.summary()["validation_images"] == 135
    # the 16x16 object sits in the middle, leaving 8 pixels of room on every side
    assert shift_margin(digits.box_train, 32) == shift_margin(digits.box_test, 32) == 8
    again = data_set()
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    other = data_set(split_seed=1)
    assert not np.array_equal(other.y_test, digits.y_test)


def test_max_train_and_max_test_keep_a_stratified_seeded_subsample(digits):
    small = data_set(canvas=24, max_train=100, max_test=50)
    assert small.x_train.shape == (90, 1, 24, 24) and small.x_val.shape == (10, 1, 24, 24)
    assert small.x_test.shape == (50, 1, 24, 24)
    assert np.bincount(small.y_train, minlength=10).min() >= 8  # every class kept
    again = data_set(canvas=24, max_train=100, max_test=50)
    np.testing.assert_array_equal(small.x_train, again.x_train)


def test_a_real_data_set_is_placed_on_its_canvas_from_local_files(tmp_path, monkeypatch):
    tarball, _, _ = small_cifar_tarball()
    use_files(monkeypatch, "cifar10", {CIFAR10_TARBALL: tarball})
    put(tmp_path / "cifar10", {CIFAR10_TARBALL: tarball})
    prepared = data_set("cifar10", canvas=40, validation_fraction=0.5, root=tmp_path,
                        download=False)
    assert len(prepared.y_train) == len(prepared.y_val) == 10  # one of each class on each side
    assert prepared.in_channels == 3 and prepared.image_size == 40
    assert prepared.x_train.dtype == np.uint8
    assert shift_margin(prepared.box_train, 40) >= 4  # the 32x32 image sits in the middle


def test_preparing_too_few_images_for_the_validation_split_names_the_keys_to_change():
    with pytest.raises(ValueError, match=r"data\.validation_fraction = 0\.1.*data\.max_train"):
        data_set(canvas=24, max_train=20)


def test_a_test_fraction_too_small_for_every_class_names_its_key():
    with pytest.raises(ValueError, match=r"data\.test_fraction = 0\.001: a stratified 0\.001 of "
                                         r"1797 images .*change data\.test_fraction"):
        data_set(canvas=24, test_fraction=0.001)


def test_caps_above_the_data_set_are_warned_about_not_silently_ignored():
    with pytest.warns(DataSizeWarning) as caught:
        prepared = data_set(max_train=5000, max_test=40, two_objects=50)
    messages = [str(w.message) for w in caught]
    assert messages == [
        "data.max_train = 5000 is more than the 1347 training images of digits: all 1347 are "
        "kept",
        "data.two_objects = 50 is more than the 40 test images of digits it is made of: objects "
        "repeat across canvases; set it to at most 40"]
    assert len(prepared.y_train) + len(prepared.y_val) == 1347 and len(prepared.x_pair) == 50


def test_the_default_study_sizes_raise_no_warning(root):
    settings = load_params(root / "params.yaml").data  # the committed study's, as it changes
    with warnings.catch_warnings():
        warnings.simplefilter("error", DataSizeWarning)
        prepare_study_dataset(settings, root)


def test_prepared_data_round_trips_through_npz_without_pickle(tmp_path, digits):
    path = tmp_path / "sub" / "dataset.npz"
    save_prepared(path, digits)
    loaded = load_prepared(path)
    assert loaded.name == "digits" and loaded.num_classes == 10
    for field in ("x_train", "y_train", "box_train", "x_test", "y_test", "box_test", "x_pair",
                  "y_pair", "box_pair"):
        np.testing.assert_array_equal(getattr(loaded, field), getattr(digits, field))
        assert getattr(loaded, field).dtype == getattr(digits, field).dtype
    assert loaded.x_pair.shape == (40, 1, 32, 32) and loaded.box_pair.shape == (40, 2, 4)
    assert [p.name for p in path.parent.iterdir()] == ["dataset.npz"]  # no temporary left


def test_loading_a_missing_data_set_says_which_stage_makes_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dvc repro prepare"):
        load_prepared(tmp_path / "dataset.npz")


def test_loading_a_data_set_written_before_two_object_canvases_asks_to_prepare_again(
        tmp_path, digits):
    path = tmp_path / "dataset.npz"
    save_prepared(path, digits)
    with np.load(path) as npz:
        old = {key: npz[key] for key in npz.files if not key.endswith("_pair")}
    np.savez(path, **old)
    with pytest.raises(ValueError, match=r"no x_pair, y_pair, box_pair.*dvc repro prepare"):
        load_prepared(path)


def test_a_data_set_whose_images_and_labels_disagree_in_number_is_refused(tmp_path, digits):
    path = tmp_path / "dataset.npz"
    save_prepared(path, digits)
    with np.load(path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files}
    arrays["y_test"] = arrays["y_test"][:-1]
    np.savez(path, **arrays)
    with pytest.raises(PreparedDataError, match=r"for its test split, which must agree.*"
                                                r"dvc checkout --force data/prepared/dataset\.npz"):
        load_prepared(path)


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped"])
def test_a_damaged_data_set_is_refused_naming_the_file_and_the_safe_fix(tmp_path, digits,
                                                                        damage):
    path = tmp_path / "data" / "prepared" / "dataset.npz"
    save_prepared(path, digits)
    data = bytearray(path.read_bytes())
    if damage == "garbage":  # numpy's own error advises allow_pickle=True, the unsafe fix
        data = bytearray(b"this is not an npz file\n" * 40)
    elif damage == "truncated":  # numpy's own error: BadZipFile, no path
        data = data[:len(data) // 2]
    else:  # a byte inside an array: the archive's CRC-32 catches it
        data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PreparedDataError) as caught:
        load_prepared(path)
    message = str(caught.value)
    assert str(path) in message and "allow_pickle" not in message
    assert "dvc checkout --force data/prepared/dataset.npz" in message
    assert "dvc repro -f -s prepare" in message


def test_to_float_scales_uint8_to_unit_range_and_keeps_zero_background():
    x = to_float(np.array([[0, 255, 51]], dtype=np.uint8))
    assert x.dtype == torch.float32
    torch.testing.assert_close(x, torch.tensor([[0.0, 1.0, 0.2]]))


def test_shift_each_moves_every_image_by_its_own_offset():
    images = torch.rand(5, 2, 6, 7)
    dx, dy = torch.tensor([0, 1, -2, 3, 0]), torch.tensor([0, -1, 2, 0, -3])
    moved = shift_each(images, dx, dy)
    for i in range(5):
        torch.testing.assert_close(moved[i], shift(images[i:i + 1], int(dx[i]), int(dy[i]))[0])
