"""MNIST, Fashion-MNIST and CIFAR-10 from their canonical files, verified.

Each data set's files are cached in ``<root>/<name>/`` (MNIST and Fashion-MNIST share file
names, so they cannot share a folder). A file already there is used as it is (local mode:
nothing is downloaded) but its published hash is always checked. A missing file is
downloaded through ``pooch``, which writes to a temporary file beside the target, checks the
hash and only then renames it into place, so the cache never holds a partial or unverified
file. Mirrors are tried in order; without a network the loader fails at once with a
``DatasetError`` saying which files to put where, their hashes and where to get them.

Formats (``gap_study.data.file_formats``): MNIST and Fashion-MNIST are gzipped IDX files; CIFAR-10
is read from its *binary* release. Published hashes and mirrors: ``docs/study.md``, "Data".

Arrays: images ``uint8 (N, C, H, W)``, labels ``int64 (N,)``.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pooch
import requests

from gap_study.data.file_formats import (
    CIFAR10_TARBALL,
    IDX_IMAGES_MAGIC,
    IDX_LABELS_MAGIC,
    DatasetError,
    read_cifar_binary,
    read_idx,
)

__all__ = [
    "CIFAR10_TARBALL",
    "DATASETS",
    "HASH_OVERRIDES_ENV",
    "DatasetError",
    "DatasetSpec",
    "RawDataset",
    "dataset_folder",
    "dataset_spec",
    "fetch_files",
    "load_raw",
]


@dataclass(frozen=True)
class DatasetSpec:
    """Where a data set's files come from and what they hold.

    ``files`` maps each file name to its published hash as a pooch ``known_hash``
    (``"md5:<hex>"``); ``mirrors`` are base URLs, tried in order (a file's URL is the base URL
    followed by its name); ``image_shape`` is ``(C, H, W)``.
    """

    name: str
    files: Mapping[str, str]
    mirrors: tuple[str, ...]
    file_format: Literal["idx", "cifar-binary"]
    image_shape: tuple[int, int, int]
    class_names: tuple[str, ...]

    def urls(self, filename: str) -> list[str]:
        return [mirror + filename for mirror in self.mirrors]


@dataclass(frozen=True, eq=False)
class RawDataset:
    """A data set's official train/test split, as published.

    ``x_train``: ``uint8 (N_train, C, H, W)``, ``y_train``: ``int64 (N_train,)``, likewise
    ``x_test``, ``y_test``; ``class_names[k]`` names label ``k``.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# The IDX files of MNIST and Fashion-MNIST: (train images, train labels, test images,
# test labels).
IDX_TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
IDX_TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
IDX_TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
IDX_TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

# All hashes below are the MD5 sums the data sets' authors and torchvision publish
# (docs/study.md, "Data"); pooch checks every file against them.
DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files={
            IDX_TRAIN_IMAGES: "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
            IDX_TRAIN_LABELS: "md5:d53e105ee54ea40749a09fcbcd1e9432",
            IDX_TEST_IMAGES: "md5:9fb629c4189551a2d022fa330f9573f3",
            IDX_TEST_LABELS: "md5:ec29112dd5afa0611ce80d1b7f02629c",
        },
        # LeCun's page is the canonical home; torchvision falls back to the ossci mirror.
        mirrors=("http://yann.lecun.com/exdb/mnist/",
                 "https://ossci-datasets.s3.amazonaws.com/mnist/"),
        file_format="idx",
        image_shape=(1, 28, 28),
        class_names=tuple(str(digit) for digit in range(10)),
    ),
    "fashion_mnist": DatasetSpec(
        name="fashion_mnist",
        files={
            IDX_TRAIN_IMAGES: "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            IDX_TRAIN_LABELS: "md5:25c81989df183df01b3e8a0aad5dffbe",
            IDX_TEST_IMAGES: "md5:bef4ecab320f06d8554ea6380940ec79",
            IDX_TEST_LABELS: "md5:bb300cfdad3c16e7a12a480ee83cd310",
        },
        # Zalando's S3 bucket named in Fashion-MNIST's README, then the same files in the
        # authors' repository.
        mirrors=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
                 "https://raw.githubusercontent.com/zalandoresearch/fashion-mnist/master/"
                 "data/fashion/"),
        file_format="idx",
        image_shape=(1, 28, 28),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
    ),
    "cifar10": DatasetSpec(
        name="cifar10",
        files={CIFAR10_TARBALL: "md5:c32a1d4ab5d03f1284b67883e8d87530"},
        mirrors=("https://www.cs.toronto.edu/~kriz/",),
        file_format="cifar-binary",
        image_shape=(3, 32, 32),
        class_names=("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                     "ship", "truck"),
    ),
}

# How one file is downloaded: a pooch downloader, called as ``(url, output_file, pooch)``.
# A module-level hook so tests can replace it and never touch the network. The connect
# timeout is short so an unreachable mirror is given up quickly; reads may take longer.
DOWNLOADER: Callable[[str, str, Any], Any] = pooch.HTTPDownloader(progressbar=True,
                                                                  timeout=(10, 60))
# Attempts per mirror for errors that often pass (timeouts, broken transfers, 5xx answers),
# waiting RETRY_WAIT_S, then twice that, ... in between.
DOWNLOAD_ATTEMPTS = 3
RETRY_WAIT_S = 2.0


# A JSON file ``{"<data set>": {"<file name>": "md5:<hex>", ...}}`` named by this variable
# replaces the published hashes of those files: for the pipeline tests, which run the real
# loading code in a subprocess on small generated files. Any use is warned about.
HASH_OVERRIDES_ENV = "GAP_STUDY_DATASET_HASHES"


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of data set ``name``; an unknown name lists the known ones."""
    try:
        spec = DATASETS[name]
    except KeyError:
        known = ", ".join(sorted(DATASETS))
        close = difflib.get_close_matches(name, DATASETS, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise DatasetError(f"unknown data set '{name}'{hint}; known: {known}") from None
    overrides_file = os.environ.get(HASH_OVERRIDES_ENV)
    if overrides_file:
        overrides = json.loads(Path(overrides_file).read_text()).get(name, {})
        unknown = sorted(set(overrides) - set(spec.files))
        if unknown:
            raise DatasetError(f"{overrides_file} names files {unknown} that {name} does not have")
        if overrides:
            warnings.warn(f"{HASH_OVERRIDES_ENV}: checking {name} against the hashes in "
                          f"{overrides_file}, not the published ones", stacklevel=2)
            spec = dataclasses.replace(spec, files={**spec.files, **overrides})
    return spec


def dataset_folder(name: str, root: str | Path) -> Path:
    """The folder holding data set ``name``'s files: ``<root>/<name>``, absolute."""
    return Path(root).absolute() / name


# ----------------------------------------------------------------------------------------
# Fetching and verifying files


def fetch_files(name: str, root: str | Path, *, download: bool = True) -> dict[str, Path]:
    """Verified local paths of data set ``name``'s files, by file name.

    Files already in ``<root>/<name>/`` are hash-checked and used (nothing is downloaded);
    missing ones are downloaded when ``download`` is true, else a ``DatasetError`` says which
    files to put where. A file whose hash is wrong raises ``DatasetError`` (it is left as it
    is for you to inspect or delete).
    """
    spec = dataset_spec(name)
    folder = dataset_folder(name, root)
    paths = {filename: folder / filename for filename in spec.files}
    missing = []
    for filename, path in paths.items():
        if path.exists():
            _check_local_file(spec, path)
        else:
            missing.append(filename)
    if missing and not download:
        raise DatasetError(_missing_files_message(
            spec, folder, missing, reason="download=False: nothing is downloaded."))
    for position, filename in enumerate(missing):
        try:
            _download(spec, filename, folder)
        except _AllMirrorsFailed as failed:
            reason = f"Downloading {filename} failed on every mirror (no network?):\n{failed}"
            # Report this file and the ones not tried yet, so one message lists them all.
            raise DatasetError(_missing_files_message(
                spec, folder, missing[position:], reason=reason)) from None
    return paths


def _check_local_file(spec: DatasetSpec, path: Path) -> None:
    """Raise ``DatasetError`` unless ``path`` is a regular file with its published hash."""
    if not path.is_file():
        raise DatasetError(f"{path} exists but is not a regular file: remove it so the "
                           f"{spec.name} file can be put there")
    algorithm, expected = spec.files[path.name].split(":", 1)
    actual = pooch.file_hash(str(path), alg=algorithm)
    if actual != expected:
        sources = " or ".join(spec.urls(path.name))
        raise DatasetError(
            f"{path} has the wrong {algorithm.upper()} hash: expected {expected} (published), "
            f"got {actual}. The file is truncated, corrupt or a different release. Delete it "
            f"and run again to re-download it, or replace it by hand with a copy from "
            f"{sources}")


def _missing_files_message(spec: DatasetSpec, folder: Path, missing: list[str],
                           reason: str) -> str:
    lines = [f"{spec.name}: {len(missing)} file(s) missing from {folder}.", reason,
             "Download them by hand and put them at these paths (their hashes are checked):"]
    for filename in missing:
        lines.append(f"  {folder / filename}")
        lines.append(f"      hash {spec.files[filename]}")
        lines.extend(f"      from {url}" for url in spec.urls(filename))
    return "\n".join(lines)


class _AllMirrorsFailed(Exception):
    """Every mirror failed for one file; the message has one line per mirror."""


def _download(spec: DatasetSpec, filename: str, folder: Path) -> None:
    """Download ``filename`` into ``folder`` from the first mirror that works.

    pooch streams to a temporary file in ``folder``, checks the hash and only then renames
    it to ``filename``; a failure deletes the temporary file, so nothing partial is left.
    """
    failures = []
    for url in spec.urls(filename):
        error = _download_from(url, filename, spec.files[filename], folder)
        if error is None:
            return
        failures.append(f"  {url}: {_describe(error)}")
    raise _AllMirrorsFailed("\n".join(failures))


def _download_from(url: str, filename: str, known_hash: str, folder: Path) -> Exception | None:
    """Try one mirror, retrying errors that often pass; the last error, or None on success."""
    error = None
    for attempt in range(DOWNLOAD_ATTEMPTS):
        if attempt:
            time.sleep(RETRY_WAIT_S * attempt)
        try:
            pooch.retrieve(url, known_hash=known_hash, fname=filename, path=folder,
                           downloader=DOWNLOADER)
            return None
        # pooch raises ValueError when the downloaded file's hash does not match.
        except (requests.exceptions.RequestException, ValueError) as caught:
            error = caught
            if not _worth_retrying(error):
                break
    return error


def _worth_retrying(error: Exception) -> bool:
    """Timeouts, broken transfers, server errors and bad hashes (a cut-off transfer) often
    pass. A connection that cannot be opened (unknown host, no network) or a 4xx answer will
    not: move on to the next mirror at once, so an offline machine fails quickly."""
    if isinstance(error, requests.exceptions.ConnectionError):  # includes ConnectTimeout
        return False
    if isinstance(error, requests.exceptions.HTTPError):
        status = error.response.status_code if error.response is not None else 0
        return status >= 500 or status == 429
    return isinstance(error, requests.exceptions.Timeout
                      | requests.exceptions.ChunkedEncodingError
                      | requests.exceptions.ContentDecodingError
                      | ValueError)


def _describe(error: Exception, limit: int = 240) -> str:
    """One short line for an error: requests' messages nest several exceptions deep."""
    text = " ".join(str(error).split())
    if len(text) > limit:
        text = text[:limit - 3] + "..."
    return f"{type(error).__name__}: {text}"


# ----------------------------------------------------------------------------------------
# Loading


def load_raw(name: str, root: str | Path, *, download: bool = True) -> RawDataset:
    """Data set ``name``'s official train/test split, from verified files in ``<root>/<name>``.

    MNIST and Fashion-MNIST: ``x_*`` ``uint8 (N, 1, 28, 28)`` (60,000 train, 10,000 test);
    CIFAR-10: ``uint8 (N, 3, 32, 32)``, channels R, G, B (50,000 train, 10,000 test).
    Labels ``int64 (N,)`` in ``[0, 10)``. See ``fetch_files`` for ``download``.
    """
    spec = dataset_spec(name)
    paths = fetch_files(name, root, download=download)
    if spec.file_format == "idx":
        x_train, y_train = _read_idx_split(paths[IDX_TRAIN_IMAGES], paths[IDX_TRAIN_LABELS])
        x_test, y_test = _read_idx_split(paths[IDX_TEST_IMAGES], paths[IDX_TEST_LABELS])
        source = f"{paths[IDX_TRAIN_IMAGES].parent}"
    else:
        x_train, y_train, x_test, y_test = read_cifar_binary(paths[CIFAR10_TARBALL])
        source = f"{paths[CIFAR10_TARBALL]}"
    _check_split(spec, x_train, y_train, f"{source} (train)")
    _check_split(spec, x_test, y_test, f"{source} (test)")
    return RawDataset(name=name, x_train=x_train, y_train=y_train, x_test=x_test,
                      y_test=y_test, class_names=spec.class_names)


def _read_idx_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 (N, 1, H, W), int64 (N,))`` from an IDX images file and its labels file."""
    images = read_idx(images_path, expected_magic=IDX_IMAGES_MAGIC)
    labels = read_idx(labels_path, expected_magic=IDX_LABELS_MAGIC)
    if len(images) != len(labels):
        raise DatasetError(f"{images_path} has {len(images)} images but {labels_path} has "
                           f"{len(labels)} labels")
    return images[:, None], labels.astype(np.int64)


def _check_split(spec: DatasetSpec, x: np.ndarray, y: np.ndarray, source: str) -> None:
    """The parsed arrays match the spec: image shape, one label per image, labels in range."""
    if x.shape[1:] != spec.image_shape:
        raise DatasetError(f"{source}: images have shape {x.shape[1:]}, expected "
                           f"{spec.image_shape} for {spec.name}")
    if len(x) != len(y):
        raise DatasetError(f"{source}: {len(x)} images but {len(y)} labels")
    if len(y) and (y.min() < 0 or y.max() >= len(spec.class_names)):
        raise DatasetError(f"{source}: labels span [{y.min()}, {y.max()}], expected "
                           f"[0, {len(spec.class_names) - 1}]")
