"""The MNIST / Fashion-MNIST / CIFAR-10 loaders, end to end on small files in the real formats.

Every test builds its own files in ``tmp_path`` and points the loader at their hashes; none
touches the network (the downloader hook and sockets are guarded by an autouse fixture).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import socket
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import requests

from gap_study import datasets
from gap_study.datasets import (
    CIFAR10_TARBALL,
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
    DatasetError,
    fetch_files,
    load_raw,
    read_cifar_binary,
    read_idx,
    stratified_subsample,
)

# ---------------------------------------------------------------------------------------
# Builders for files in the real formats


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """An IDX file of unsigned bytes: magic (00 00 08 ndim), big-endian uint32 dims, data."""
    array = np.asarray(array, dtype=np.uint8)
    if magic is None:
        magic = 0x0800 | array.ndim
    header = struct.pack(">I", magic) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def md5_hash(data: bytes) -> str:
    return "md5:" + hashlib.md5(data).hexdigest()


def small_idx_files(seed: int = 0, n_train: int = 12, n_test: int = 6) -> dict[str, bytes]:
    """The four gzipped IDX files of a tiny MNIST-like set (28x28, labels 0..9)."""
    rng = np.random.default_rng(seed)
    arrays = {
        IDX_TRAIN_IMAGES: rng.integers(0, 256, (n_train, 28, 28)),
        IDX_TRAIN_LABELS: np.arange(n_train) % 10,
        IDX_TEST_IMAGES: rng.integers(0, 256, (n_test, 28, 28)),
        IDX_TEST_LABELS: (np.arange(n_test) * 3) % 10,
    }
    # mtime=0: the same arrays always give the same bytes, hence the same hash.
    return {name: gzip.compress(idx_bytes(a), mtime=0) for name, a in arrays.items()}


def cifar_record(label: int, red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> bytes:
    """One CIFAR binary record, written from the format's description, not the parser's
    reshape: the label byte, then the red, green and blue 32x32 planes, each row by row."""
    planes = b"".join(bytes(plane.astype(np.uint8).ravel(order="C")) for plane in
                      (red, green, blue))
    return bytes([label]) + planes


def cifar_batch(labels: list[int], rng: np.random.Generator) -> tuple[bytes, np.ndarray]:
    """Records for ``labels`` with random planes; also the images as (N, 3, 32, 32)."""
    images = rng.integers(0, 256, (len(labels), 3, 32, 32), dtype=np.uint8)
    data = b"".join(cifar_record(lab, *img) for lab, img in zip(labels, images, strict=True))
    return data, images


def tar_gz_bytes(members: dict[str, bytes]) -> bytes:
    """A gzipped tarball holding ``members`` (name -> content) as regular files."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


TRAIN_LABELS = [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]  # two records per training batch
TEST_LABELS = [9, 0, 5]


def small_cifar_tarball(seed: int = 0) -> tuple[bytes, np.ndarray, np.ndarray]:
    """A CIFAR-10 binary tarball with the real member names (plus the real extra files,
    which the parser must skip), and the expected train and test images."""
    rng = np.random.default_rng(seed)
    members, train_images = {}, []
    members["cifar-10-batches-bin/batches.meta.txt"] = b"airplane\nautomobile\n"
    for i, labels in enumerate(TRAIN_LABELS, start=1):
        data, images = cifar_batch(labels, rng)
        members[f"cifar-10-batches-bin/data_batch_{i}.bin"] = data
        train_images.append(images)
    members["cifar-10-batches-bin/test_batch.bin"], test_images = cifar_batch(TEST_LABELS, rng)
    members["cifar-10-batches-bin/readme.html"] = b"<html></html>"
    return tar_gz_bytes(members), np.concatenate(train_images), test_images


# ---------------------------------------------------------------------------------------
# Fixtures: the loader pointed at generated files


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Fail any test that would download or open a socket; tests that simulate a download
    replace ``datasets.DOWNLOADER`` themselves. Retries wait no time."""
    def downloader_must_not_run(url, output_file, pooch):
        pytest.fail(f"the downloader was called for {url}")

    def connect_must_not_run(self, address):
        pytest.fail(f"a test opened a network connection to {address}")

    monkeypatch.setattr(datasets, "DOWNLOADER", downloader_must_not_run)
    monkeypatch.setattr(socket.socket, "connect", connect_must_not_run)
    monkeypatch.setattr(datasets, "RETRY_WAIT_S", 0.0)


def use_files(monkeypatch, name: str, files: dict[str, bytes]) -> datasets.DatasetSpec:
    """Point data set ``name``'s spec at the hashes of ``files`` (name -> content)."""
    spec = dataclasses.replace(datasets.DATASETS[name],
                               files={fn: md5_hash(data) for fn, data in files.items()})
    monkeypatch.setitem(datasets.DATASETS, name, spec)
    return spec


def put(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for filename, data in files.items():
        (folder / filename).write_bytes(data)


@pytest.fixture
def mnist_files(monkeypatch) -> dict[str, bytes]:
    files = small_idx_files()
    use_files(monkeypatch, "mnist", files)
    return files


class FakeDownloader:
    """A pooch downloader serving ``files`` by URL, after the scripted ``failures`` (one
    exception per call, in order, ``None`` = serve). Records every URL asked for."""

    def __init__(self, files: dict[str, bytes], failures: list[Exception | None] = ()):
        self.files = files
        self.failures = list(failures)
        self.urls: list[str] = []

    def __call__(self, url, output_file, pooch):
        self.urls.append(url)
        with open(output_file, "wb") as fh:
            fh.write(b"partial")  # what a cut-off transfer leaves in pooch's temporary file
            failure = self.failures.pop(0) if self.failures else None
            if failure is not None:
                raise failure
            fh.seek(0)
            fh.write(self.files[url.rsplit("/", 1)[1]])
            fh.truncate()


def offline_downloader() -> FakeDownloader:
    return FakeDownloader({}, [requests.exceptions.ConnectionError("Name or service not known")]
                          * 100)


# ---------------------------------------------------------------------------------------
# Registry


def test_registry_holds_the_published_md5_hashes_and_mirrors():
    mnist, fashion, cifar = (datasets.DATASETS[n] for n in ("mnist", "fashion_mnist", "cifar10"))
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
    spec = datasets.DATASETS["mnist"]
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
    spec = datasets.DATASETS["mnist"]
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
    monkeypatch.setattr(datasets, "DOWNLOADER", downloader)
    with pytest.raises(DatasetError) as info:
        load_raw("mnist", tmp_path)
    message = str(info.value)
    spec = datasets.DATASETS["mnist"]
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
    monkeypatch.setattr(datasets, "DOWNLOADER", FakeDownloader({}, [not_found]))
    with pytest.raises(DatasetError, match="HTTPError: 404 Client Error") as info:
        fetch_files("cifar10", tmp_path)
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz: HTTPError" in str(info.value)
    assert list((tmp_path / "cifar10").iterdir()) == []


def test_missing_files_are_downloaded_from_the_next_mirror_when_one_fails(
        tmp_path, monkeypatch, mnist_files):
    put(tmp_path / "mnist", {IDX_TRAIN_IMAGES: mnist_files[IDX_TRAIN_IMAGES]})
    unreachable = requests.exceptions.ConnectionError("connection refused")
    downloader = FakeDownloader(mnist_files, [unreachable, None, None, None])
    monkeypatch.setattr(datasets, "DOWNLOADER", downloader)
    raw = load_raw("mnist", tmp_path)
    first, second = datasets.DATASETS["mnist"].mirrors
    assert downloader.urls == [first + IDX_TRAIN_LABELS, second + IDX_TRAIN_LABELS,
                               first + IDX_TEST_IMAGES, first + IDX_TEST_LABELS]
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(mnist_files)
    assert raw.y_train.tolist() == [*range(10), 0, 1]


def test_transient_errors_are_retried_on_the_same_mirror(tmp_path, monkeypatch, mnist_files):
    put(tmp_path / "mnist", {fn: d for fn, d in mnist_files.items() if fn != IDX_TEST_LABELS})
    downloader = FakeDownloader(mnist_files, [requests.exceptions.ReadTimeout("read timed out"),
                                              requests.exceptions.ChunkedEncodingError("cut")])
    monkeypatch.setattr(datasets, "DOWNLOADER", downloader)
    fetch_files("mnist", tmp_path)
    first = datasets.DATASETS["mnist"].mirrors[0]
    assert downloader.urls == [first + IDX_TEST_LABELS] * 3


def test_download_with_wrong_hash_is_rejected_and_not_kept(tmp_path, monkeypatch, mnist_files):
    wrong = {fn: b"<html>mirror error page</html>" for fn in mnist_files}
    monkeypatch.setattr(datasets, "DOWNLOADER", FakeDownloader(wrong))
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
    assert x_train.shape == (10, 3, 32, 32) and x_train.dtype == np.uint8
    assert x_test.shape == (3, 3, 32, 32)
    assert y_train.dtype == np.int64 and y_train.tolist() == list(range(10))  # batches 1..5
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


# ---------------------------------------------------------------------------------------
# Stratified subsampling


def imbalanced() -> tuple[np.ndarray, np.ndarray]:
    y = np.repeat(np.array([0, 1, 2], dtype=np.int64), [60, 30, 10])
    y = np.random.default_rng(5).permutation(y)
    x = np.arange(len(y))[:, None] * np.ones((1, 2), dtype=np.int64)  # row i holds i
    return x, y


def test_stratified_subsample_keeps_class_proportions_and_pairs():
    x, y = imbalanced()
    xs, ys = stratified_subsample(x, y, max_count=20, seed=0)
    assert np.bincount(ys).tolist() == [12, 6, 2]
    np.testing.assert_array_equal(y[xs[:, 0]], ys)  # each image keeps its label
    assert (np.diff(xs[:, 0]) > 0).all()  # original order, no repeats


def test_stratified_subsample_hits_max_count_exactly_when_shares_round():
    x, y = imbalanced()
    _, ys = stratified_subsample(x, y, max_count=7, seed=3)
    assert len(ys) == 7 and np.bincount(ys, minlength=3).tolist() == [4, 2, 1]


def test_stratified_subsample_is_deterministic_per_seed():
    x, y = imbalanced()
    a = stratified_subsample(x, y, 20, seed=1)[0]
    np.testing.assert_array_equal(a, stratified_subsample(x, y, 20, seed=1)[0])
    assert not np.array_equal(a, stratified_subsample(x, y, 20, seed=2)[0])


@pytest.mark.parametrize("max_count", [None, 100, 1000])
def test_stratified_subsample_keeps_everything_when_not_limiting(max_count):
    x, y = imbalanced()
    xs, ys = stratified_subsample(x, y, max_count, seed=0)
    np.testing.assert_array_equal(xs, x)
    np.testing.assert_array_equal(ys, y)


def test_stratified_subsample_rejects_a_count_below_one():
    x, y = imbalanced()
    with pytest.raises(ValueError, match="at least 1"):
        stratified_subsample(x, y, 0, seed=0)
