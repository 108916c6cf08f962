"""The tiny study that test_pipeline.py runs end to end: a Dask scheduler and two workers as
processes of their own, the study after one `dvc repro` on them, and the study put back after
a test that reruns stages or edits params."""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path

import yaml
from builders import (
    command_env,
    declared_outputs,
    deterministic_outputs,
    free_port,
    run_command,
    tiny_repository,
)
from distributed import Client

# The heads are the fewest that take every path of the report: `dense` (the baseline, no class
# map), `gap` (a class map) and `gsp` (with `gap`, the sum-pooling section). Every head is
# covered by the unit tests of the modules.
HEADS = ["dense", "gap", "gsp"]
# What the tiny study's report holds: the sections it runs ("Spatial pooling or head capacity"
# needs `linear` and `gap_hidden`, and a section the study did not run is left out), every
# claim, and exactly these figures.
SECTIONS = ("## In one minute", "## Contents", "## The claims, tested", "## Learning rates",
            "## Parameters",
            "## Accuracy and overfitting", "## Learning curve",
            "## Translation robustness", "### Training with random shifts",
            "### Prediction stability", "## Why global pooling is not shift invariant",
            "## Class activation maps",
            "## Global sum vs global average pooling", "## Training speed",
            "## Published numbers", "## Provenance")
CLAIMS = ("fewer parameters", "less overfitting", "more translation robust", "faster training",
          "feature maps tied to classes")
FIGURES = ["accuracy.png", "cam_overlays.png", "forest.png", "fraction_curve.png",
           "mechanism_heatmaps.png", "params.png",
           "pointing.png", "shift_heatmaps.png", "shift_radius.png", "shift_training.png",
           "stability.png", "time.png", "training_curves.png", "tuning.png"]


@contextlib.contextmanager
def dask_cluster(logs: Path) -> Iterator[str]:
    """The address of a Dask scheduler with two single-threaded workers, each a process of its
    own started with `dask scheduler` / `dask worker` on 127.0.0.1 (a worker's nanny restarts
    it when it dies); their logs in ``logs``."""
    address = f"tcp://127.0.0.1:{free_port()}"
    processes = [_start(["dask", "scheduler", "--host", "127.0.0.1", "--port",
                         address.rsplit(":", 1)[1], "--no-dashboard",
                         "--dashboard-address", "127.0.0.1:0"], logs / "scheduler.log")]
    processes += [_start(["dask", "worker", address, "--nthreads", "1", "--nworkers", "1",
                          "--no-dashboard", "--name", f"worker-{i}"], logs / f"worker-{i}.log")
                  for i in range(2)]
    try:
        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
        yield address
    finally:  # the workers first: with their scheduler gone, they took 8 s to close
        for group in (processes[1:], processes[:1]):
            for process in group:
                process.terminate()
            for process in group:
                process.wait(timeout=60)


def _start(args: list[str], log: Path) -> subprocess.Popen:
    env = command_env(DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_="None")
    with log.open("w") as out:
        return subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT,
                                cwd=log.parent)


def set_scheduler(repo: Path, scheduler: str, workers: int | None = None) -> None:
    """``compute.scheduler`` (and ``compute.workers``) of ``repo``'s params.yaml."""
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["compute"].update(scheduler=scheduler, workers=workers)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def run_study(folder: Path, scheduler: str) -> tuple[Path, dict[str, bytes]]:
    """The tiny study of ``HEADS`` in ``folder`` after one `dvc repro` on ``scheduler``, and its
    deterministic outputs at that point."""
    repo = tiny_repository(folder, HEADS, compute={"scheduler": scheduler})
    run_command(["dvc", "repro"], repo)
    return repo, deterministic_outputs(repo)


@contextlib.contextmanager
def restoring(root: Path) -> Iterator[None]:
    """Afterwards, the study in ``root`` as it was before, up to date for the next test: its
    ``dvc.lock``, ``params.yaml`` and the outputs kept in git are written back, and the cached
    outputs are checked out of DVC's cache, cheaper than the reruns (the training histories
    hold timings, so a retrained stage would rerun the report)."""
    kept = ["dvc.lock", "params.yaml", *declared_outputs(root)[1]]
    before = {path: (root / path).read_bytes() for path in kept}
    yield
    for path, data in before.items():
        (root / path).write_bytes(data)
    run_command(["dvc", "checkout", "--force"], root)
    assert "up to date" in run_command(["dvc", "status"], root).stdout


def columns(header: str, row: str) -> dict[str, str]:
    """A plain table's row by its header's column names (columns stand 2+ spaces apart)."""
    names, cells = re.split(r"\s{2,}", header.strip()), re.split(r"\s{2,}", row.strip())
    return dict(zip(names, cells, strict=False))  # a cut line may end early
