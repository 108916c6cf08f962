"""Writing stage outputs safely: every file goes to a temporary name beside its target, is
flushed to the disk (``fsync``) and renamed into place only once complete, so a killed stage,
or a machine that loses power, never leaves a truncated output that the next stage would read.
A write that fails for want of space raises ``DiskFullError`` naming the file, instead of an
errno buried in the notebook or torch's ``unexpected pos``.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "DiskFullError",
    "atomic_path",
    "write_arrays",
    "write_csv",
    "write_json",
    "write_text",
]

# mkstemp creates files readable by the owner only; give outputs the usual permissions.
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK

# The errnos of a full disk (ENOSPC) or an exhausted quota (EDQUOT).
_NO_SPACE = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


class DiskFullError(OSError):
    """An output could not be written because its disk (or quota) is full."""


def _free_space(folder: Path) -> str:
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:,.0f} MiB free"
    except OSError:
        return "free space unknown"


def _os_error(error: BaseException | None) -> OSError | None:
    """``error`` itself, or the first ``OSError`` it was raised from or during."""
    while error is not None and not isinstance(error, OSError):
        error = error.__cause__ or error.__context__
    return error


def _disk_full(path: Path, error: BaseException) -> DiskFullError | None:
    """A ``DiskFullError`` for ``path`` when ``error`` is a failed write for want of space."""
    # 1. torch.save reports a short write as "[enforce fail at inline_container.cc] ...
    #    unexpected pos N vs M", raised while handling the file object's own OSError where
    #    there is one: that errno says whether the disk was full (ENOSPC) or something else
    #    failed (a file size limit: EFBIG), which then passes through unchanged. Without one,
    #    a short write is in practice a full disk.
    if isinstance(error, OSError):
        full = error.errno in _NO_SPACE
    elif isinstance(error, RuntimeError) and "unexpected pos" in str(error):
        written = _os_error(error.__context__)
        full = written is None or written.errno in _NO_SPACE
    else:
        full = False
    if not full:
        return None
    cause = str(error).splitlines()[0] if str(error) else type(error).__name__
    return DiskFullError(errno.ENOSPC, f"disk full: could not write {path} "
                         f"({_free_space(path.parent)} in {path.parent}; {cause}). Free space "
                         "and run the stage again")


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``path``'s folder; on success flush it to the disk and rename
    it to ``path``.

    On an exception the temporary file is removed and ``path`` is left as it was.
    Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    tmp.chmod(_FILE_MODE)
    try:
        yield tmp
        # 2. Flushed before the rename, and the folder after it: otherwise a crash of the
        #    machine can leave the new name pointing at a file whose data never reached the disk.
        _fsync(tmp)
        os.replace(tmp, path)
        with suppress(OSError):  # some file systems cannot flush a folder
            _fsync(path.parent)
    except (OSError, RuntimeError) as error:
        if (full := _disk_full(path, error)) is not None:
            raise full from error
        raise
    finally:
        tmp.unlink(missing_ok=True)


def write_text(path: str | Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path: str | Path, data: Any) -> None:
    """Sorted keys and fixed indentation, so equal data gives byte-identical files."""
    write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_csv(path: str | Path, frame: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=False, lineterminator="\n")


def write_arrays(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    """An uncompressed ``.npz`` of plain arrays (loadable with ``allow_pickle=False``)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays)
