"""What made a run: package versions, device, threads, git commit. Recorded next to results."""

from __future__ import annotations

import platform
import subprocess
from pathlib import Path

import numpy as np
import torch

__all__ = ["git_commit", "run_environment"]


def git_commit(root: str | Path = ".") -> str | None:
    """``HEAD``'s hash, with ``-dirty`` when tracked files differ from it; ``None`` outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty.strip() else "")


def run_environment(device: torch.device | str, root: str | Path = ".") -> dict[str, object]:
    """Versions, device and threads of this process, for a run record."""
    device = torch.device(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "platform": platform.platform(),
        "device": str(device),
        "device_name": name or platform.machine(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(root),
    }
