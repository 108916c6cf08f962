"""What made a run: package versions, device, CPU, threads, git commit. Recorded next to results.

The CPU matters even for CPU-free claims: torch picks its kernels by the instructions a CPU
offers (``cpu_capability``: AVX2, AVX512 ...), and kernels differ in the last bits of a float,
which training amplifies. Same params and seed give bit-identical results on the same machine;
on another CPU they may differ slightly, and the record says which CPU each run had.
"""

from __future__ import annotations

import platform
import socket
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

__all__ = ["cpu_name", "git_commit", "numba_version", "run_environment", "run_record",
           "worker_facts"]


def git_commit(root: str | Path = ".") -> str | None:
    """``HEAD``'s hash, with ``-dirty`` when tracked files other than the pipeline's own
    outputs and settings differ from it; ``None`` outside git. (DVC rewrites ``dvc.lock``
    after every stage of a run, and the stages rewrite the committed files under
    ``reports/``, such as ``metrics.json``: counting them would mark every stage of a clean
    checkout's run after the first dirty. ``params.yaml`` is how ``dvc exp run -S`` sets an
    experiment, and every run record keeps the values it ran with.)"""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":(exclude,top)dvc.lock", ":(exclude,top)reports",
                                ":(exclude,top)params.yaml"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty.strip() else "")


def cpu_name() -> str:
    """The CPU's model name (from ``/proc/cpuinfo`` on Linux), else what the platform says."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def numba_version() -> str | None:
    """numba's version, ``None`` where it is not installed: ``BlurMaxPool2d`` runs its CPU
    kernel with numba and torch's ops without, which round differently."""
    try:
        return metadata.version("numba")
    except metadata.PackageNotFoundError:
        return None


def run_environment(device: torch.device | str, root: str | Path = ".") -> dict[str, object]:
    """Versions, device, CPU and threads of this process, for a run record."""
    import torch  # here, not above: the report stage records its commit without torch

    device = torch.device(device)
    cpu = cpu_name()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numba": numba_version(),
        "platform": platform.platform(),
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu,
        "cpu": cpu,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(root),
    }


def run_record(params: Mapping[str, object], device: torch.device | str,
               root: str | Path = ".", **facts: object) -> dict[str, object]:
    """A stage's ``run.json``: the params it ran with (as the notebook received them), facts
    about its inputs (``facts``, e.g. ``dataset=...``) and ``run_environment``."""
    return {**params, **facts, "environment": run_environment(device, root)}


def worker_facts(device: torch.device | str) -> dict[str, object]:
    """Where a task ran, for the run record of each run: host, CPU, the instruction set torch
    chose kernels for, torch threads and device."""
    import torch

    device = torch.device(device)
    return {"host": socket.gethostname(), "cpu": cpu_name(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "torch_threads": torch.get_num_threads(),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
