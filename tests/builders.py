"""Builders shared by the tests: small files in the data sets' real formats (IDX, the
CIFAR-10 binary tarball), their hashes, a data set spec pointed at them, a scripted
downloader, and a tiny digits data set."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import signal
import socket
import struct
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import requests
import yaml

from gap_study.data import sources
from gap_study.data.canvas import CanvasDataset
from gap_study.data.prepare import prepare_dataset
from gap_study.data.sources import (
    IDX_TEST_IMAGES,
    IDX_TEST_LABELS,
    IDX_TRAIN_IMAGES,
    IDX_TRAIN_LABELS,
)
from gap_study.nets.architecture import ModelConfig
from gap_study.pipeline.params import ModelParams, TrainParams
from gap_study.pipeline.paths import RunId
from gap_study.pipeline.workspace import copy_project
from gap_study.stages.train import train_run


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


# four records per training batch, two images a class: enough for a stratified validation
# split that holds out one of each
TRAIN_LABELS = [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 0, 1], [2, 3, 4, 5], [6, 7, 8, 9]]
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


def use_files(monkeypatch, name: str, files: dict[str, bytes]) -> sources.DatasetSpec:
    """Point data set ``name``'s spec at the hashes of ``files`` (name -> content)."""
    spec = dataclasses.replace(sources.DATASETS[name],
                               files={fn: md5_hash(data) for fn, data in files.items()})
    monkeypatch.setitem(sources.DATASETS, name, spec)
    return spec


def put(folder: Path, files: dict[str, bytes]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for filename, data in files.items():
        (folder / filename).write_bytes(data)


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




# What every test's data set shares: prepare_dataset has no defaults for the values that
# define the study's data (params.yaml sets them), so each test names only what it changes.
TEST_DATA = {"digits_size": 16, "test_fraction": 0.25, "validation_fraction": 0.1,
             "split_seed": 0, "two_objects": 0}


def data_set(name: str = "digits", *, canvas: int = 32, **changes) -> CanvasDataset:
    """``prepare_dataset(name, canvas=canvas)`` with ``TEST_DATA``, ``changes`` on top."""
    return prepare_dataset(name, canvas=canvas, **{**TEST_DATA, **changes})


def small_digits(digits):
    """The first 200 training, 60 validation and 100 test images of a ``CanvasDataset``:
    enough to learn something in two epochs."""
    return dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200],
                               box_train=digits.box_train[:200], x_val=digits.x_val[:60],
                               y_val=digits.y_val[:60], box_val=digits.box_val[:60],
                               x_test=digits.x_test[:100], y_test=digits.y_test[:100],
                               box_test=digits.box_test[:100])


# images per forward pass of the measures (params.yaml's evaluate.batch_size): each test's
# images fit in one
BATCH = 128


def tiny_config(head: str, image_size: int = 32) -> ModelConfig:
    """A two-block model with 4 and 8 channels (and 16 hidden units for dense)."""
    return ModelConfig(head=head, in_channels=1, image_size=image_size, num_classes=10,
                       widths=(4, 8), dense_hidden=16)


# the model section of tiny_config, as params.yaml would give it
TINY_MODEL = ModelParams(widths=[4, 8], dense_hidden=16, gem_p=3.0, lse_r=10.0, dropout=0.5,
                         downsample="max", blur_size=3, padding="zeros")


def tiny_settings(epochs: int = 2, *, schedule: str = "constant") -> TrainParams:
    """The ``train`` section of the tiny runs: batch 32, no weight decay, every batch kept."""
    return TrainParams(seeds=[0], epochs=epochs, batch_size=32, schedule=schedule,
                       drop_last=False, weight_decay=0.0, validation_batch_size=512,
                       fractions=[1.0], shift=[0])


def train_small(data, head: str = "gap", *, seed: int = 0, epochs: int = 2,
                fraction: float = 1.0, train_shift: int = 0, config: ModelConfig | None = None):
    """``train_run`` of ``tiny_config(head)`` (or ``config``) on ``data``: ``tiny_settings``,
    learning rate 0.01, on the CPU."""
    return train_run(config or tiny_config(head, data.image_size), data,
                     RunId(fraction, train_shift, seed), tiny_settings(epochs), 0.01,
                     device="cpu", progress=False)


# ---------------------------------------------------------------------------------------
# Tiny copies of the project for the end-to-end tests

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port of 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def command_env(**extra_env: str) -> dict[str, str]:
    """The environment for ``dvc`` and ``python`` subprocesses: this interpreter's ``bin``
    first on ``PATH``, DVC's analytics off."""
    return {**os.environ, "DVC_NO_ANALYTICS": "1", **extra_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def sigint_as_on_a_terminal() -> None:
    """A child's ``preexec_fn``: SIGINT at its default, as a terminal's foreground job has it.
    A suite started in the background inherits SIGINT ignored, and so would the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_command(args: list[str], cwd: Path, check: bool = True, **extra_env: str):
    """Run ``args`` in ``cwd``; with ``check``, a failure shows the end of its output."""
    result = subprocess.run(args, cwd=cwd, env=command_env(**extra_env), capture_output=True,
                            text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def copy_repository(target: Path) -> None:
    """The files git would commit (tracked, or new and not ignored), nothing generated: no
    ``dvc.lock`` and none of the outputs kept in git (``cache: false`` in ``dvc.yaml``, such
    as ``reports/verdicts.json``), so the copy's pipeline has not run and holds no result of
    this project's own run (which ``dvc exp run -S ...`` rewrites in the work tree)."""
    copy_project(ROOT, target)
    (target / "dvc.lock").unlink(missing_ok=True)
    for path in declared_outputs(target)[1]:
        (target / path).unlink(missing_ok=True)


def declared_outputs(root: Path) -> tuple[set[str], set[str]]:
    """``(cached, kept in git)``: every output path of dvc.yaml's stages, split by
    ``cache: false``."""
    cached, in_git = set(), set()
    for stage in yaml.safe_load((root / "dvc.yaml").read_text())["stages"].values():
        for entry in [*stage.get("outs", []), *stage.get("metrics", []),
                      *stage.get("plots", [])]:
            path, options = next(iter(entry.items())) if isinstance(entry, dict) else (entry, {})
            (in_git if options.get("cache") is False else cached).add(path)
    return cached, in_git


TINY_SEEDS = [0, 1]
TINY_VARIANTS = [(0.5, 0), (1.0, 0), (1.0, 2)]  # (fraction, training shift) of each seed


def tiny_repository(repo: Path, heads: list[str], **sections: dict) -> Path:
    """A git repository with the project's files and tiny params (a third of the digits, two
    small blocks, two epochs, seeds ``TINY_SEEDS``, the variants ``TINY_VARIANTS``), with
    ``sections`` updating the params' sections; nothing run yet."""
    copy_repository(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["heads"] = heads
    params["data"].update(max_train=400, max_test=150)  # a stratified third of the digits
    params["model"].update(widths=[4, 8], dense_hidden=16)
    params["train"].update(seeds=TINY_SEEDS, epochs=2, batch_size=64, fractions=[0.5, 1.0],
                           shift=[0, 2])
    # bounds at the grid: two rates x tune.seeds per head, never extended
    params["tune"].update(learning_rates=[0.001, 0.01], lr_min=0.001, lr_max=0.01)
    params["evaluate"]["max_shift"] = 2
    params["report"]["bootstrap"]["resamples"] = 1000  # the fewest allowed: a tenth of the time
    # its runs stay near chance (10%): a target they reach, so that the time to the target is
    # measured as in a study (the bounds of runs that miss it have unit tests)
    params["report"]["time_target"] = 0.05
    # one head in the six cells is enough end to end; the report's sentences have unit tests.
    # Shift-trained at 2, which train.shift has: those runs are the train stage's
    params["mechanism"].update(heads=["gap"] if "gap" in heads else heads[:1], train_shift=2,
                               test_images=30)
    for name, values in sections.items():
        params[name].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_command(["git", "init", "-q"], repo)
    run_command(["git", "add", "-A"], repo)
    run_command(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"],
                repo)
    return repo


def deterministic_outputs(repo: Path) -> dict[str, bytes]:
    """Every deterministic output per head: model weights and evaluation metrics, the
    mechanism experiment's included."""
    files = [*sorted((repo / "models").glob("*/*.pt")),
             *sorted((repo / "reports" / "eval").glob("*/metrics.csv")),
             *sorted((repo / "models_mechanism").glob("*/*/*.pt")),
             repo / "reports" / "mechanism" / "runs.csv"]
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in files}
