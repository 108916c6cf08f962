"""A stage's finished runs, kept on disk as each task returns, so that a stage started again
after an interruption, a crash or a full disk computes only the runs it lacks.

1. Not among the stage's outputs: DVC deletes a stage's outputs before it runs the stage's
   command, so runs kept there would be gone when the rerun looks for them. They live in
   ``.gap_study/runs/<stage>/`` (ignored by git, no DVC output), one folder per run named by
   the run's key, and the stage empties its folder once its outputs are written: the runs are
   then in the outputs and DVC's cache, and ``dvc repro -f`` computes every run again.
2. A run's key is the SHA-256 of everything that determines its result: the task function,
   the item, the values every task shares (the data set itself, settings, learning rates,
   device), the torch threads per run, the source code of ``gap_study``, and the versions of
   Python, torch and NumPy with the CPU instruction set of the stage's process. A kept run is
   reused only when its record names that key and every file it lists still has the SHA-256
   recorded when it was written; anything else is computed again.
3. A result is kept as plain files that load without unpickling: checkpoints as
   ``torch.save`` archives (loaded with ``weights_only=True``), arrays and table columns in an
   ``.npz`` (loaded with ``allow_pickle=False``), everything else as JSON that keeps NumPy
   scalar types. A reloaded result writes the same bytes as the fresh one.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import json
import platform
import shutil
from collections.abc import Callable, Mapping, Sequence
from functools import cache
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np
import pandas as pd
import torch
from pydantic import BaseModel

from gap_study.nets.checkpoints import file_sha256, write_checkpoint
from gap_study.pipeline.io import DiskFullError, write_arrays, write_text
from gap_study.pipeline.provenance import numba_version

__all__ = ["KeptRuns", "NotEnoughSpaceError", "code_fingerprint", "fingerprint"]

R = TypeVar("R")
RECORD = "record.json"  # written last: a run folder without it is incomplete
ARRAYS = "arrays.npz"
RUN_OVERHEAD = 64 * 1024  # a run's history, record and file-system blocks, beyond ``size``


class NotEnoughSpaceError(DiskFullError):
    """Too little free disk space to start a stage: the message names the path, the bytes
    needed and free, and the fix."""


def _feed(digest: Any, value: Any) -> None:
    """Add ``value`` to ``digest``, tagged with its kind so that, e.g., ``1``, ``1.0``,
    ``True`` and ``"1"`` differ."""
    if isinstance(value, np.ndarray):
        if value.dtype.hasobject:
            raise TypeError("cannot fingerprint an array of Python objects")
        digest.update(f"ndarray{value.dtype.str}{value.shape}".encode())
        digest.update(np.ascontiguousarray(value).tobytes())
    elif isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor{value.dtype}{tuple(value.shape)}".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, BaseModel):
        _feed(digest, (type(value).__qualname__, value.model_dump(mode="json")))
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        _feed(digest, (type(value).__qualname__,
                       {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}))
    elif isinstance(value, Mapping):
        digest.update(f"map{len(value)}".encode())
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(f"{type(value).__name__}{len(value)}".encode())
        for element in value:
            _feed(digest, element)
    elif value is None or isinstance(value, bool | int | float | str | bytes | np.generic
                                     | Path):
        digest.update(f"{type(value).__name__}:{value!r};".encode())
    elif callable(value) and hasattr(value, "__qualname__"):
        digest.update(f"fn:{value.__module__}.{value.__qualname__};".encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(value).__name__}")


def fingerprint(*values: Any) -> str:
    """The SHA-256 of ``values``, as hex: equal values give equal fingerprints in any process."""
    digest = hashlib.sha256()
    _feed(digest, values)
    return digest.hexdigest()


@cache
def code_fingerprint() -> str:
    """The SHA-256 of every ``gap_study`` source file, with the versions of Python, torch,
    NumPy and numba (or its absence: ``BlurMaxPool2d`` then runs on torch's ops) and the CPU
    instruction set torch chose its kernels for."""
    package = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        digest.update(path.relative_to(package).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    _feed(digest, (platform.python_version(), torch.__version__, np.__version__,
                   str(numba_version()), torch.backends.cpu.get_cpu_capability()))
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# A result as files (3.)


def _to_json(value: Any) -> Any:
    if isinstance(value, np.generic):  # before float: np.float64 is a float
        return {"__numpy__": value.dtype.str, "value": value.item()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list):
        return [_to_json(v) for v in value]
    if isinstance(value, tuple):
        return {"__tuple__": [_to_json(v) for v in value]}
    if isinstance(value, dict) and all(isinstance(k, str) and not k.startswith("__")
                                       for k in value):
        return {k: _to_json(v) for k, v in value.items()}
    raise TypeError(f"cannot keep a {type(value).__name__} as JSON")


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return [_from_json(v) for v in value]
    if isinstance(value, dict):
        if "__numpy__" in value:
            return np.dtype(value["__numpy__"]).type(value["value"])
        if "__tuple__" in value:
            return tuple(_from_json(v) for v in value["__tuple__"])
        return {k: _from_json(v) for k, v in value.items()}
    return value


def _column(series: pd.Series) -> np.ndarray:
    """A table column as a plain array: numbers and booleans as they are, text as ``str_``."""
    if series.dtype.kind in "biufc":
        return series.to_numpy()
    if not all(isinstance(v, str) for v in series):
        raise TypeError(f"cannot keep column {series.name!r} of dtype {series.dtype}")
    return np.array(series.tolist(), dtype=np.str_)


def _encode(name: str, value: Any, folder: Path, arrays: dict[str, np.ndarray],
            files: dict[str, str]) -> dict[str, Any]:
    """How field ``name`` is kept; its arrays go to ``arrays``, a checkpoint to a file."""
    if value is None:
        return {"kind": "none"}
    if isinstance(value, pd.DataFrame):
        for j, column in enumerate(value.columns):
            arrays[f"{name}/{j}"] = _column(value[column])
        default = value.index.equals(pd.RangeIndex(len(value)))
        if not default:
            arrays[f"{name}/index"] = value.index.to_numpy()
        return {"kind": "frame", "columns": _to_json(list(value.columns)),
                "dtypes": [str(dtype) for dtype in value.dtypes], "index": not default}
    if isinstance(value, np.ndarray):
        arrays[name] = value
        return {"kind": "array"}
    if isinstance(value, dict) and value and all(isinstance(v, np.ndarray)
                                                 for v in value.values()):
        for j, array in enumerate(value.values()):
            arrays[f"{name}/{j}"] = array
        return {"kind": "arrays", "keys": list(value)}
    if isinstance(value, dict) and set(value) == {"config", "state_dict"}:
        files[f"{name}.pt"] = write_checkpoint(folder / f"{name}.pt", value)
        return {"kind": "checkpoint"}
    return {"kind": "json", "value": _to_json(value)}


def _decode(name: str, spec: Mapping[str, Any], folder: Path,
            arrays: Mapping[str, np.ndarray]) -> Any:
    kind = spec["kind"]
    if kind == "none":
        return None
    if kind == "frame":
        columns = _from_json(spec["columns"])
        frame = pd.DataFrame({j: pd.Series(arrays[f"{name}/{j}"]).astype(dtype)
                              for j, dtype in enumerate(spec["dtypes"])})
        frame.columns = pd.Index(columns)
        if spec["index"]:
            frame.index = pd.Index(arrays[f"{name}/index"])
        return frame
    if kind == "array":
        return arrays[name]
    if kind == "arrays":
        return {key: arrays[f"{name}/{j}"] for j, key in enumerate(spec["keys"])}
    if kind == "checkpoint":
        return torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True)
    return _from_json(spec["value"])


class KeptRuns(Generic[R]):
    """The finished runs of one stage, kept in ``folder`` as results of type ``kind`` (a
    dataclass); the stage's outputs are written under ``outputs`` (for the space check)."""

    def __init__(self, folder: str | Path, kind: type[R], outputs: str | Path) -> None:
        if not dataclasses.is_dataclass(kind):
            raise TypeError(f"kept runs must be dataclasses, not {kind.__name__}")
        self.folder, self.kind, self.outputs = Path(folder), kind, Path(outputs)
        self.notes: list[str] = []  # kept runs found unusable, and why

    def keys(self, fn: Callable[..., Any], items: Sequence[Any], shared: Mapping[str, Any],
             threads: int) -> list[str]:
        """Each item's key (2.): what ``fn(item, **shared)`` on ``threads`` threads gives."""
        common = fingerprint(code_fingerprint(), fn, threads, shared)
        return [fingerprint(common, item) for item in items]

    def save(self, key: str, result: R, label: str) -> None:
        """Keep ``result`` under ``key``: its files first, then its record, each written
        atomically and flushed to the disk. A full disk raises ``DiskFullError``."""
        folder = self.folder / key
        shutil.rmtree(folder, ignore_errors=True)  # an incomplete attempt at this run
        arrays: dict[str, np.ndarray] = {}
        files: dict[str, str] = {}
        fields = {f.name: _encode(f.name, getattr(result, f.name), folder, arrays, files)
                  for f in dataclasses.fields(result)}  # type: ignore[arg-type]
        if arrays:
            write_arrays(folder / ARRAYS, arrays)
            files[ARRAYS] = file_sha256(folder / ARRAYS)
        record = {"key": key, "label": label, "kind": self.kind.__qualname__, "files": files,
                  "fields": fields}
        write_text(folder / RECORD, json.dumps(record, indent=1) + "\n")  # keys in order

    def load(self, key: str) -> R | None:
        """The result kept under ``key``, or ``None``. A run whose record does not name this
        key and kind, or whose files differ from their recorded SHA-256, is removed and noted
        (``notes``): it is computed again."""
        folder = self.folder / key
        if not (folder / RECORD).is_file():
            shutil.rmtree(folder, ignore_errors=True)  # interrupted while being kept
            return None
        try:
            record = json.loads((folder / RECORD).read_text())
            if record.get("key") != key or record.get("kind") != self.kind.__qualname__:
                raise ValueError("its record is for another run")
            for name, digest in record["files"].items():
                if file_sha256(folder / name) != digest:
                    raise ValueError(f"{name} has changed since it was kept")
            arrays: dict[str, np.ndarray] = {}
            if ARRAYS in record["files"]:
                with np.load(folder / ARRAYS, allow_pickle=False) as stored:
                    arrays = {name: stored[name] for name in stored.files}
            fields = {name: _decode(name, spec, folder, arrays)
                      for name, spec in record["fields"].items()}
            return self.kind(**fields)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as error:
            self.notes.append(f"kept run {folder} not used, computed again: {error}")
            shutil.rmtree(folder, ignore_errors=True)
            return None

    def require_space(self, missing: Sequence[int], every: Sequence[int]) -> None:
        """Raise ``NotEnoughSpaceError`` unless the disk holds the runs still to compute
        (``missing``: bytes of each one's result) as they are kept, then the outputs of
        ``every`` run, each with ``RUN_OVERHEAD`` bytes more. Folders on one file system share
        its free space."""
        needs: dict[int, list[Any]] = {}  # file system -> [a folder on it, bytes]
        for path, sizes in ((self.folder, missing), (self.outputs, every)):
            size = sum(sizes) + RUN_OVERHEAD * len(sizes)
            existing = next(p for p in (path, *path.parents) if p.exists())
            needs.setdefault(existing.stat().st_dev, [existing, 0])[1] += size
        for where, size in needs.values():
            free = shutil.disk_usage(where).free
            if size > free:
                raise NotEnoughSpaceError(
                    errno.ENOSPC,
                    f"not enough free disk space in {where}: the stage needs about {size:,} "
                    f"bytes ({size / 2**20:,.1f} MiB) there for {len(missing)} runs kept as "
                    f"they finish and the outputs of {len(every)}, and {free:,} bytes "
                    f"({free / 2**20:,.1f} MiB) are free. Free space there (`dvc gc -w` drops "
                    "cached versions the workspace does not use) or run fewer runs, then run "
                    "the stage again")

    def clear(self) -> None:
        """Forget every kept run: the stage has written its outputs (1.)."""
        shutil.rmtree(self.folder, ignore_errors=True)
