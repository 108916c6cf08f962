"""Stopping the train stage of a tiny study midway, as a user or a crash would: Ctrl-C to
`dvc repro`, or SIGKILL to it and every process under it. Used by test_pipeline.py."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pandas as pd
import psutil
from builders import command_env, sigint_as_on_a_terminal

from gap_study.pipeline.kept import RECORD
from gap_study.pipeline.paths import Layout

TRAIN = ["dvc", "repro", "--force", "--single-item", "train"]


def kept_runs(repo: Path) -> int:
    """Runs the train stage has kept so far: those whose record (written last) is there."""
    return len(list(Layout(repo).kept_runs("train").glob(f"*/{RECORD}")))


def histories(repo: Path) -> dict[str, str]:
    """The training histories without their timings, which are never the same twice."""
    return {path.relative_to(repo).as_posix():
            pd.read_csv(path).drop(columns=["epoch_seconds", "images_per_second"]).to_csv()
            for path in sorted((repo / "reports" / "train" / "history").glob("*/*.csv"))}


def _training_cell_running(repo: Path) -> bool:
    """Whether the train notebook is executing its training cell right now (papermill saves
    the executed notebook with each cell's status as it goes)."""
    try:
        nb = json.loads((repo / "reports" / "notebooks" / "train.ipynb").read_text())
    except (OSError, ValueError):  # not there yet, or being rewritten this very moment
        return False
    return any("train_task" in "".join(cell["source"])
               and cell["metadata"].get("papermill", {}).get("status") == "running"
               for cell in nb["cells"])


def interrupt_training(repo: Path) -> None:
    """Ctrl-C to `dvc repro` of the train stage once its first run is kept: it stops, with
    one line on stderr, and no outputs."""
    # SIGINT as `make repro` on a terminal has it, whether or not the suite runs in the
    # background
    process = subprocess.Popen(TRAIN, cwd=repo, env=command_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               preexec_fn=sigint_as_on_a_terminal)
    # after the first run is kept: the cell's task then ends with an error that asyncio
    # would print, the kernel's whole traceback, if the runner did not silence it
    deadline = time.monotonic() + 240
    while not (_training_cell_running(repo) and kept_runs(repo)) \
            and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    _, err = process.communicate(timeout=120)
    assert process.returncode != 0, "dvc repro finished before it could be interrupted"
    assert not (repo / "models").exists()  # nothing half-written for the next stage
    # one line says what stopped and how to resume, without the runner's asyncio report of
    # the interrupted cell (the kernel's whole traceback), and without the local cluster's
    # workers dying of the interrupt, each with its own traceback
    assert "interrupted: notebooks/train.ipynb stopped before it finished" in err
    assert not [shown for shown in ("never retrieved", "KeyboardInterrupt", "Traceback")
                if shown in err], err


def kill_training(repo: Path, runs: int) -> None:
    """SIGKILL to `dvc repro` of the train stage (of ``runs`` runs) and every process under
    it (runner, kernel, a local cluster's nannies and workers) once it has kept a run more
    than it started with: a crash, which runs no handler. DVC dies first: were a child killed
    first, DVC could see its stage fail and be killed halfway through rewriting
    `.dvc/tmp/rwlock`, a corrupt lock no real crash of the stage leaves behind."""
    reused = kept_runs(repo)
    stage = subprocess.Popen(TRAIN, cwd=repo, env=command_env(), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while kept_runs(repo) <= reused and stage.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    root = psutil.Process(stage.pid)
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()
    psutil.wait_procs(processes, timeout=60)
    assert reused < kept_runs(repo) < runs, "the stage was not killed midway"
    assert not (repo / "models").exists()  # DVC removed the outputs; the kept runs remain
