"""How a stage's runner (``gap_study.pipeline.run_notebook``) is told to stop: SIGTERM or
SIGHUP, as a Ctrl-C (SIGINT) does, and the end of the DVC process that started it.

A stage's kernel runs in a session of its own, so a signal to DVC's process group does not
reach it: the runner must shut it down (papermill's cleanup does, and the kernel's Dask
workers go with it). Without this, ``kill`` of DVC alone left the runner to init and the
kernel went on training and writing outputs that no ``dvc.lock`` records.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["Stopped", "lineage", "stops_with_its_starter"]

# The shells DVC runs a stage's command through ($SHELL, else /bin/sh, with -c). One that does
# not exec the command (dash, for one) stays between DVC and the runner, and outlives DVC.
_SHELLS = frozenset({"sh", "dash", "bash", "zsh", "fish", "ksh", "mksh", "ash"})
_STOPS = tuple(getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name))


class Stopped(KeyboardInterrupt):
    """A stop asked for by a signal other than Ctrl-C's SIGINT: ``signum``."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _stop(signum: int, _frame: Any) -> None:
    # 1. Once: a second stop (the watch below, or the terminal's SIGHUP after SIGTERM) must
    #    not cut short the kernel's shutdown that the first one starts.
    for other in _STOPS:
        signal.signal(other, signal.SIG_IGN)
    raise Stopped(signum)


def _proc(pid: int, name: str) -> str | None:
    try:
        return Path(f"/proc/{pid}/{name}").read_text()
    except OSError:  # gone, or no /proc (macOS): only the runner's own parent is watched
        return None


def _parent_of(pid: int) -> int | None:
    """The parent of process ``pid``, from Linux's /proc; ``None`` where it cannot be read."""
    if pid == os.getpid():
        return os.getppid()
    stat = _proc(pid, "stat")
    return int(stat.rsplit(")", 1)[1].split()[1]) if stat else None


def lineage() -> tuple[tuple[int, int | None], ...]:
    """``(process, its parent)`` for this process and each shell above it, up to the first
    ancestor that is not a shell (DVC): while the stage runs, none of them may change."""
    chain, pid = [], os.getpid()
    while True:
        parent = _parent_of(pid)
        chain.append((pid, parent))
        if parent is None or parent <= 1 or (_proc(parent, "comm") or "").strip() not in _SHELLS:
            return tuple(chain)
        pid = parent


@contextmanager
def stops_with_its_starter(started_by: tuple[tuple[int, int | None], ...],
                           poll: float = 1.0) -> Iterator[None]:
    """Within the block, SIGTERM and SIGHUP raise ``Stopped`` (each only where it is not
    ignored: ``nohup`` keeps a stage running through a hangup), and, in a stage DVC runs
    (``DVC_STAGE`` set), a thread sends SIGTERM once a process of ``started_by`` (this
    process's ``lineage`` when it started) has a new parent: DVC has ended. Main thread only,
    as signal handlers are."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.getsignal(signum) for signum in _STOPS}
    for signum, handler in previous.items():
        if handler is not signal.SIG_IGN:
            signal.signal(signum, _stop)
    done = threading.Event()

    def watch() -> None:
        while not done.wait(poll):
            if any(_parent_of(pid) != parent for pid, parent in started_by):
                os.kill(os.getpid(), signal.SIGTERM)
                return

    if "DVC_STAGE" in os.environ:
        threading.Thread(target=watch, name="watch-starter", daemon=True).start()
    try:
        yield
    finally:
        done.set()
        for signum, handler in previous.items():
            if handler is not None:  # None: a handler not set from Python, left as it is
                signal.signal(signum, handler)
