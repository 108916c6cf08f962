"""The MNIST / Fashion-MNIST / CIFAR-10 loaders, end to end on small files in the real formats.

Every test builds its own files in ``tmp_path`` and points the loader at their hashes; none
touches the network (the downloader hook and sockets are guarded by an autouse fixture).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import socket
import tarfile

import numpy as np
import pytest
import requests
from builders import (
    TEST_LABELS,
    TRAIN_LABELS,
    FakeDownloader,
    cifar_record,
    idx_bytes,
    offline_downloader,
    put,
    small_cifar_tarball,
    small_idx_files,
    tar_gz_bytes,
    use_files,
)

from gap_study.data import sources
from gap_study.data.file_formats import read_cifar_binary, read_idx
from gap_study.data.sources import (
    CIFAR10_TARBALL,
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    DatasetError,
    fetch_files,
    load_raw,
)

# ---------------------------------------------------------------------------------------
# Fixtures: the loader pointed at generated files


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that would download or open a socket; tests that simulate a download
    replace ``sources.DOWNLOADER`` themselves. Retries wait no time."""
    def downloader_must_not_run(url, output_file, pooch):
        pytest.fail(f"the downloader was called for {url}")

    def connect_must_not_run(self, address):
        pytest.fail(f"a test opened a network connection to {address}")

    monkeypatch.setattr(sources, "DOWNLOADER", downloader_must_not_run)
    monkeypatch.setattr(socket.socket, "connect", connect_must_not_run)
    monkeypatch.setattr(sources, "RETRY_WAIT_S", 0.0)


@pytest.fixture
def mnist_files(monkeypatch) -> dict[str, bytes]:
    files = small_idx_files()
    use_files(monkeypatch, "mnist", files)
    return files


# ---------------------------------------------------------------------------------------
# Registry


def test_registry_holds_the_published_md5_hashes_and_mirrors():
    mnist, fashion, cifar = (sources.DATASETS[n] for n in ("mnist", "fashion_mnist", "cifar10"))
    assert dict(mnist.files) == {
        IDX_TRAIN_IMAGES: "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
        IDX_TRAIN_LABELS: "md5:d53e105ee54ea40749a09fcbcd1e9432",
        IDX_TEST_IMAGES: "md5:9fb629c4189551a2d022fa330f9573f3",
        IDX_TEST_LABELS: "md5:ec29112dd5afa0611ce80d1b7f02629c",
    }
    assert dict(fashion.files) == {
        IDX_TRAIN_IMAGES: "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        IDX_TRAIN_LABELS: "md5:25c81989df183df01b3e8a0aad5dffbe",
        IDX_TEST_IMAGES: "md5:bef4ecab320f06d8554ea6380940ec79",
        IDX_TEST_LABELS: "md5:bb300cfdad3c16e7a12a480ee83cd310",
    }
    assert dict(cifar.files) == {CIFAR10_TARBALL: "md5:c32a1d4ab5d03f1284b67883e8d87530"}
    assert mnist.mirrors[0] == "http://yann.lecun.com/exdb/mnist/"
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/" in mnist.mirrors
    assert fashion.mirrors[0] == "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
    assert cifar.urls(CIFAR10_TARBALL) == [
        "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"]
    assert all(len(spec.class_names) == 10 for spec in (mnist, fashion, cifar))


def test_unknown_data_set_name_lists_the_known_ones(tmp_path):
    with pytest.raises(DatasetError, match="unknown data set 'mnsit'") as info:
        load_raw("mnsit", tmp_path)
    message = str(info.value)
    assert "did you mean 'mnist'" in message
    assert "cifar10, fashion_mnist, mnist" in message


# ---------------------------------------------------------------------------------------
# Local mode and loading


def test_local_files_load_end_to_end_without_calling_the_downloader(tmp_path, mnist_files):
    put(tmp_path / "mnist", mnist_files)
    raw = load_raw("mnist", tmp_path)  # the autouse fixture fails the test on a download
    assert raw.name == "mnist" and raw.num_classes == 10
    assert raw.x_train.shape == (12, 1, 28, 28) and raw.x_train.dtype == np.uint8
    assert raw.x_test.shape == (6, 1, 28, 28)
    assert raw.y_train.dtype == np.int64 and raw.y_train.tolist() == [*range(10), 0, 1]
    assert raw.y_test.tolist() == [0, 3, 6, 9, 2, 5]
    expected = read_idx(tmp_path / "mnist" / IDX_TRAIN_IMAGES)
    np.testing.assert_array_equal(raw.x_train[:, 0], expected)
    assert raw.x_train.flags.writeable


def test_fetch_files_returns_the_verified_paths_in_the_data_set_folder(tmp_path, mnist_files):
    put(tmp_path / "mnist", mnist_files)
    paths = fetch_files("mnist", tmp_path, download=False)
    assert paths == {fn: (tmp_path / "mnist" / fn).absolute() for fn in mnist_files}


def test_mnist_and_fashion_mnist_live_in_separate_folders(tmp_path, monkeypatch):
    mnist, fashion = small_idx_files(seed=1), small_idx_files(seed=2)
    use_files(monkeypatch, "mnist", mnist)
    use_files(monkeypatch, "fashion_mnist", fashion)
    put(tmp_path / "mnist", mnist)
    put(tmp_path / "fashion_mnist", fashion)
    a, b = load_raw("mnist", tmp_path), load_raw("fashion_mnist", tmp_path)
    assert not np.array_equal(a.x_train, b.x_train)
    assert b.class_names[0] == "T-shirt/top"


def test_read_idx_reads_plain_and_gzipped_files_with_their_shapes(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    (tmp_path / "images.idx").write_bytes(idx_bytes(images))
    (tmp_path / "labels.gz").write_bytes(gzip.compress(idx_bytes(np.array([7, 1]))))
    np.testing.assert_array_equal(read_idx(tmp_path / "images.idx"), images)
    labels = read_idx(tmp_path / "labels.gz")
    assert labels.dtype == np.uint8 and labels.tolist() == [7, 1]


# ---------------------------------------------------------------------------------------
# Corrupt files


def test_local_file_with_wrong_hash_names_file_expected_and_actual_hash(tmp_path, mnist_files):
    spec = sources.DATASETS["mnist"]
    bad = mnist_files[IDX_TRAIN_LABELS][:-5]  # a truncated copy
    put(tmp_path / "mnist", {**mnist_files, IDX_TRAIN_LABELS: bad})
    with pytest.raises(DatasetError) as info:
        load_raw("mnist", tmp_path)
    message = str(info.value)
    path = tmp_path / "mnist" / IDX_TRAIN_LABELS
    assert str(path) in message
    assert spec.files[IDX_TRAIN_LABELS].removeprefix("md5:") in message  # expected
    assert hashlib.md5(bad).hexdigest() in message  # actual
    assert "Delete it" in message and "re-download" in message
    assert path.read_bytes() == bad  # the user's file is left for them to inspect


def test_truncated_idx_data_is_reported_with_the_sizes(tmp_path):
    data = idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))[:-10]
    path = tmp_path / IDX_TRAIN_IMAGES
    path.write_bytes(gzip.compress(data))
    with pytest.raises(DatasetError, match="is truncated") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "2,342 bytes follow" in str(info.value)


def test_truncated_gzip_stream_is_reported(tmp_path):
    path = tmp_path / IDX_TRAIN_LABELS
    path.write_bytes(gzip.compress(idx_bytes(np.arange(500) % 10))[:-20])
    with pytest.raises(DatasetError, match="not a complete gzip file") as info:
        read_idx(path)
    assert str(path) in str(info.value)


def test_truncated_idx_header_is_reported(tmp_path):
    path = tmp_path / "short.idx"
    path.write_bytes(idx_bytes(np.zeros((3, 28, 28), dtype=np.uint8))[:9])
    with pytest.raises(DatasetError, match="too short for the header of 3 dimensions"):
        read_idx(path)


def test_trailing_bytes_after_idx_data_are_reported(tmp_path):
    path = tmp_path / "long.idx"
    path.write_bytes(idx_bytes(np.arange(4)) + b"\0\0")
    with pytest.raises(DatasetError, match="2 unexpected bytes"):
        read_idx(path)


def test_labels_file_in_place_of_images_is_a_wrong_magic_number(tmp_path, monkeypatch):
    files = small_idx_files()
    files[IDX_TEST_IMAGES] = files[IDX_TEST_LABELS]  # hashes match: the parser must catch it
    use_files(monkeypatch, "mnist", files)
    put(tmp_path / "mnist", files)
    with pytest.raises(DatasetError, match="wrong IDX magic number 0x00000801") as info:
        load_raw("mnist", tmp_path)
    assert str(tmp_path / "mnist" / IDX_TEST_IMAGES) in str(info.value)
    assert "expected 0x00000803" in str(info.value)


def test_non_idx_file_is_a_wrong_magic_number(tmp_path):
    path = tmp_path / "page.gz"
    path.write_bytes(gzip.compress(b"<html>Forbidden</html>"))
    with pytest.raises(DatasetError, match="wrong IDX magic number 0x3c68746d"):
        read_idx(path)


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path, monkeypatch):
    files = small_idx_files()
    files[IDX_TRAIN_LABELS] = gzip.compress(idx_bytes(np.arange(5)), mtime=0)
    use_files(monkeypatch, "mnist", files)
    put(tmp_path / "mnist", files)
    with pytest.raises(DatasetError, match=r"has 12 images but .* has 5 labels"):
        load_raw("mnist", tmp_path)


def test_labels_out_of_range_are_rejected(tmp_path, monkeypatch):
    files = small_idx_files()
    files[IDX_TEST_LABELS] = gzip.compress(idx_bytes(np.array([0, 1, 2, 3, 4, 10])), mtime=0)
    use_files(monkeypatch, "mnist", files)
    put(tmp_path / "mnist", files)
    with pytest.raises(DatasetError, match=r"\(test\): labels span \[0, 10\], expected \[0, 9\]"):
        load_raw("mnist", tmp_path)


# ---------------------------------------------------------------------------------------
# Missing files: download=False, offline, and downloads through mirrors


def test_missing_files_with_download_false_list_target_paths_hashes_and_mirrors(tmp_path):
    # The real registry: the message carries the published hashes.
    with pytest.raises(DatasetError) as info:
        fetch_files("mnist", tmp_path / "raw", download=False)
    message = str(info.value)
    assert "download=False" in message
    spec = sources.DATASETS["mnist"]
    for filename, known_hash in spec.files.items():
        assert str((tmp_path / "raw" / "mnist" / filename).absolute()) in message
        assert known_hash in message
        for url in spec.urls(filename):
            assert url in message
    assert not (tmp_path / "raw").exists()  # nothing was created


def test_only_the_missing_files_are_listed(tmp_path, mnist_files):
    put(tmp_path / "mnist", {IDX_TRAIN_IMAGES: mnist_files[IDX_TRAIN_IMAGES]})
    with pytest.raises(DatasetError, match="3 file") as info:
        fetch_files("mnist", tmp_path, download=False)
    assert str(tmp_path / "mnist" / IDX_TRAIN_IMAGES) not in str(info.value)
    assert str(tmp_path / "mnist" / IDX_TEST_LABELS) in str(info.value)


def test_network_failure_fails_at_once_with_instructions_and_leaves_no_file(
        tmp_path, monkeypatch, mnist_files):
    downloader = offline_downloader()
    monkeypatch.setattr(sources, "DOWNLOADER", downloader)
    with pytest.raises(DatasetError) as info:
        load_raw("mnist", tmp_path)
    message = str(info.value)
    spec = sources.DATASETS["mnist"]
    assert "failed on every mirror" in message
    assert "ConnectionError: Name or service not known" in message
    for filename, known_hash in spec.files.items():
        assert str(tmp_path / "mnist" / filename) in message and known_hash in message
    # A refused connection is not retried: one try per mirror, then give up (first file).
    assert downloader.urls == spec.urls(IDX_TRAIN_IMAGES)
    assert list((tmp_path / "mnist").iterdir()) == []  # pooch's partial temp file is gone
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_http_error_on_every_mirror_is_reported_per_mirror(tmp_path, monkeypatch):
    files = small_cifar_tarball()[:1]
    use_files(monkeypatch, "cifar10", {CIFAR10_TARBALL: files[0]})
    response = requests.Response()
    response.status_code = 404
    not_found = requests.exceptions.HTTPError("404 Client Error: Not Found", response=response)
    monkeypatch.setattr(sources, "DOWNLOADER", FakeDownloader({}, [not_found]))
    with pytest.raises(DatasetError, match="HTTPError: 404 Client Error") as info:
        fetch_files("cifar10", tmp_path)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz: HTTPError" in str(info.value)
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_missing_files_are_downloaded_from_the_next_mirror_when_one_fails(
        tmp_path, monkeypatch, mnist_files):
    put(tmp_path / "mnist", {IDX_TRAIN_IMAGES: mnist_files[IDX_TRAIN_IMAGES]})
    unreachable = requests.exceptions.ConnectionError("connection refused")
    downloader = FakeDownloader(mnist_files, [unreachable, None, None, None])
    monkeypatch.setattr(sources, "DOWNLOADER", downloader)
    raw = load_raw("mnist", tmp_path)
    first, second = sources.DATASETS["mnist"].mirrors
    assert downloader.urls == [first + IDX_TRAIN_LABELS, second + IDX_TRAIN_LABELS,
                               first + IDX_TEST_IMAGES, first + IDX_TEST_LABELS]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(mnist_files)
    assert raw.y_train.tolist() == [*range(10), 0, 1]


def test_transient_errors_are_retried_on_the_same_mirror(tmp_path, monkeypatch, mnist_files):
    put(tmp_path / "mnist", {fn: d for fn, d in mnist_files.items() if fn != IDX_TEST_LABELS})
    downloader = FakeDownloader(mnist_files, [requests.exceptions.ReadTimeout("read timed out"),
                                              requests.exceptions.ChunkedEncodingError("cut")])
    monkeypatch.setattr(sources, "DOWNLOADER", downloader)
    fetch_files("mnist", tmp_path)
    first = sources.DATASETS["mnist"].mirrors[0]
    assert downloader.urls == [first + IDX_TEST_LABELS] * 3


def test_download_with_wrong_hash_is_rejected_and_not_kept(tmp_path, monkeypatch, mnist_files):
    wrong = {fn: b"<html>mirror error page</html>" for fn in mnist_files}
    monkeypatch.setattr(sources, "DOWNLOADER", FakeDownloader(wrong))
    with pytest.raises(DatasetError, match="does not match the known hash"):
        fetch_files("mnist", tmp_path)
    assert list((tmp_path / "mnist").iterdir()) == []


# ---------------------------------------------------------------------------------------
# CIFAR-10 binary


def test_cifar_binary_gives_shapes_channel_order_and_labels(tmp_path):
    tarball, train_images, test_images = small_cifar_tarball()
    path = tmp_path / CIFAR10_TARBALL
    path.write_bytes(tarball)
    x_train, y_train, x_test, y_test = read_cifar_binary(path)
    assert x_train.shape == (20, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (3, 3, 32, 32)
    assert y_train.dtype == np.int64  # batches 1..5, in order
    assert y_train.tolist() == [label for batch in TRAIN_LABELS for label in batch]
    assert y_test.tolist() == TEST_LABELS
    np.testing.assert_array_equal(x_train, train_images)
    np.testing.assert_array_equal(x_test, test_images)


def test_cifar_channels_are_red_green_blue_planes_in_row_major_order(tmp_path):
    red = np.zeros((32, 32), dtype=np.uint8)
    red[0, 1] = 200  # the second byte after the label: row 0, column 1
    green, blue = np.full((32, 32), 50, np.uint8), np.full((32, 32), 90, np.uint8)
    record = cifar_record(7, red, green, blue)
    assert record[2] == 200 and record[1 + 1024] == 50 and record[1 + 2048] == 90
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": record for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = record
    path = tmp_path / CIFAR10_TARBALL
    path.write_bytes(tar_gz_bytes(members))
    _, _, x_test, y_test = read_cifar_binary(path)
    assert y_test.tolist() == [7]
    assert x_test[0, 0, 0, 1] == 200 and x_test[0, 0].sum() == 200
    assert (x_test[0, 1] == 50).all() and (x_test[0, 2] == 90).all()


def test_cifar10_loads_end_to_end_from_root(tmp_path, monkeypatch):
    tarball, train_images, _ = small_cifar_tarball()
    use_files(monkeypatch, "cifar10", {CIFAR10_TARBALL: tarball})
    put(tmp_path / "cifar10", {CIFAR10_TARBALL: tarball})
    raw = load_raw("cifar10", tmp_path)
    np.testing.assert_array_equal(raw.x_train, train_images)
    assert raw.class_names[:2] == ("airplane", "automobile")
    assert sorted(p.name for p in (tmp_path / "cifar10").iterdir()) == [CIFAR10_TARBALL]


def test_cifar_tarball_without_a_batch_names_the_missing_member(tmp_path):
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": bytes(3073) for i in range(1, 6)}
    path = tmp_path / CIFAR10_TARBALL
    path.write_bytes(tar_gz_bytes(members))
    with pytest.raises(DatasetError, match=r"lacks cifar-10-batches-bin/test_batch\.bin"):
        read_cifar_binary(path)


def test_cifar_batch_with_a_partial_record_is_truncated(tmp_path):
    members = {f"cifar-10-batches-bin/data_batch_{i}.bin": bytes(3073) for i in range(1, 6)}
    members["cifar-10-batches-bin/test_batch.bin"] = bytes(3073 + 100)
    path = tmp_path / CIFAR10_TARBALL
    path.write_bytes(tar_gz_bytes(members))
    with pytest.raises(DatasetError, match=r"test_batch\.bin is truncated or corrupt: 3,173"):
        read_cifar_binary(path)


def test_truncated_cifar_tarball_is_reported(tmp_path):
    tarball = small_cifar_tarball()[0]
    path = tmp_path / CIFAR10_TARBALL
    path.write_bytes(tarball[: len(tarball) // 2])
    with pytest.raises(DatasetError, match="not a complete gzipped tar file") as info:
        read_cifar_binary(path)
    assert str(path) in str(info.value)


def test_cifar_member_that_is_a_link_is_rejected(tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        link = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    path = tmp_path / CIFAR10_TARBALL
    path.write_bytes(buffer.getvalue())
    with pytest.raises(DatasetError, match="not a regular file"):
        read_cifar_binary(path)
