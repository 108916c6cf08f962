"""The Makefile's targets against dvc.yaml: `make clean` removes exactly the pipeline's outputs."""

import fnmatch
import os
import shlex
import shutil
import subprocess

import pytest
from builders import declared_outputs


@pytest.mark.skipif(shutil.which("make") is None, reason="no make here")
def test_make_clean_removes_every_cached_output_and_keeps_the_metrics_in_git(root):
    # under `make test` this make is a sub-make: without --no-print-directory it announces
    # "make[1]: Entering directory"; the parent's MAKEFLAGS are not this command's
    environment = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL")}
    shown = subprocess.run(["make", "--no-print-directory", "-n", "clean"], cwd=root,
                           capture_output=True, text=True, check=True, env=environment).stdout
    words = shlex.split(shown.replace("\\\n", " "))
    assert words[:2] == ["rm", "-rf"]
    removed = words[2:]
    cached, in_git = declared_outputs(root)

    def covered(path: str) -> bool:
        return any(fnmatch.fnmatch(path, pattern) or path.startswith(pattern.rstrip("/") + "/")
                   for pattern in removed)

    assert sorted(p for p in cached if not covered(p)) == []
    assert sorted(p for p in in_git if covered(p)) == []
