"""Copies of the project, for the end-to-end tests and the benchmarks that run the pipeline
somewhere other than the user's checkout. No stage imports this module."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

__all__ = ["copy_project"]


def copy_project(source: Path, target: Path) -> None:
    """Copy into ``target`` the files of the project at ``source`` that git would commit
    (tracked, or new and not ignored): the code, notebooks and params, nothing generated.
    Needs git."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=source, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (source / name).is_file():  # a tracked file deleted in the work tree is skipped
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / name, target / name)
