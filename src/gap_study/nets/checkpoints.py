"""Trained models on disk: config and weights in one file that ``torch.load(weights_only=True)``
reads, byte-identical for equal weights.

A checkpoint's *payload* (``checkpoint_payload``) is what the file holds: plain tensors and
builtins, so a training task can return it from any worker and the stage writes it.

Every checkpoint is verified before it is read: ``write_checkpoint`` returns the file's SHA-256,
the stage that wrote it keeps it in its run record (``checkpoints``, keyed by ``record_key``),
and ``read_checkpoint(path, record)`` refuses a file whose bytes differ from what was recorded.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import torch

from gap_study.nets.architecture import ModelConfig
from gap_study.nets.models import ClassifierNet, build_model
from gap_study.pipeline.io import atomic_path
from gap_study.pipeline.paths import find_project_root
from gap_study.pipeline.runtime import resolve_device

__all__ = [
    "CheckpointError",
    "checkpoint_payload",
    "checkpoint_size",
    "file_sha256",
    "model_from_payload",
    "read_checkpoint",
    "record_key",
    "write_checkpoint",
]

Payload = dict[str, Any]

# What torch.load raises on a damaged archive: a truncated zip gives OSError (errno 22, no
# path) or RuntimeError, garbage an UnpicklingError, a file cut short inside a record EOFError.
# The UnpicklingError class is named through torch.serialization: this module imports no
# pickler (tests/test_safety.py).
_DAMAGED = (OSError, RuntimeError, EOFError, ValueError,
            torch.serialization.pickle.UnpicklingError, zipfile.BadZipFile)


class CheckpointError(RuntimeError):
    """A checkpoint that must not be used: damaged, changed since it was written, or not
    recorded by the stage that should have written it. The message names the file and the fix."""


def checkpoint_payload(model: ClassifierNet) -> Payload:
    """``{"config": ..., "state_dict": ...}`` of ``model``: builtins and CPU tensors only."""
    return {"config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in
                           model.state_dict().items()}}


@cache
def checkpoint_size(config: ModelConfig) -> int:
    """The bytes a checkpoint of ``config``'s model takes on disk: ``write_checkpoint`` stores
    the weights uncompressed, so the size follows their shapes, not their values."""
    buffer = io.BytesIO()
    torch.save(checkpoint_payload(build_model(config)), buffer)
    return buffer.tell()


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file's bytes, as hex."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def record_key(path: str | Path, root: str | Path) -> str:
    """How a run record names a checkpoint: its path relative to the project root, with ``/``."""
    return Path(path).resolve().relative_to(Path(root).resolve()).as_posix()


def write_checkpoint(path: str | Path, payload: Payload) -> str:
    """Write a payload atomically; equal payloads give byte-identical files. Returns the file's
    SHA-256, for the stage's run record."""
    # 1. Through a file object: torch.save names the archive's records after a file path, and
    #    the temporary name is random, so saving to a path would make equal weights differ.
    # 2. Hashed from the written file before it is renamed into place: the digest is that of
    #    the bytes on disk, never of a copy in memory.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            torch.save(payload, fh)
        return file_sha256(tmp)


def _fix(key: str) -> str:
    stage = "mechanism" if key.startswith("models_mechanism/") else "train"
    return (f"restore it with `dvc checkout --force {key}`, or train it again with "
            f"`dvc repro -f -s {stage}`")


def _recorded_digest(path: Path, record: Path) -> tuple[str, str]:
    """``(key, SHA-256)`` that ``record`` holds for the checkpoint ``path``."""
    root = find_project_root(record.parent)
    key = record_key(path, root)
    try:
        digests: Mapping[str, str] = json.loads(record.read_text()).get("checkpoints", {})
    except (OSError, ValueError) as error:
        raise CheckpointError(f"cannot verify {key}: its run record {record} is missing or "
                              f"unreadable ({error}); {_fix(key)}") from None
    if key not in digests:
        raise CheckpointError(f"cannot verify {key}: its run record {record} has no SHA-256 "
                              f"for it (written by another run of the stage); {_fix(key)}")
    return key, digests[key]


def read_checkpoint(path: str | Path, record: str | Path | None = None) -> Payload:
    """The payload of a checkpoint file, tensors on the CPU.

    With ``record`` (the run record of the stage that wrote it, e.g. ``Layout.train_run``) the
    file's SHA-256 must be the one recorded there: ``torch.load`` does not check the archive's
    CRC, so a flipped byte would otherwise load as silently wrong weights. A mismatch, a
    damaged file or a missing record entry raises ``CheckpointError`` naming the file and the fix.
    """
    path = Path(path)
    key = path.as_posix()
    if record is not None:
        key, expected = _recorded_digest(path, Path(record))
        if not path.is_file():
            raise CheckpointError(f"{key} does not exist; {_fix(key)}")
        if (actual := file_sha256(path)) != expected:
            raise CheckpointError(
                f"{key} has changed since its stage wrote it (SHA-256 {actual[:12]}..., "
                f"recorded {expected[:12]}... in {record}): it is damaged or was replaced; "
                f"{_fix(key)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"{key} does not exist; {_fix(key)}") from None
    except _DAMAGED as error:
        cause = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{key} is damaged (truncated or not a checkpoint: {cause}); "
                              f"{_fix(key)}") from None


def model_from_payload(payload: Payload, device: str | torch.device = "cpu") -> ClassifierNet:
    """Rebuild a payload's model, in eval mode, on ``device``."""
    device = resolve_device(device) if isinstance(device, str) else device
    model = build_model(ModelConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device=device, memory_format=torch.channels_last).eval()
