from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import IO

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]

# The suite runs on two pytest-xdist workers (pyproject.toml): one thread each, for them and
# the processes they start, so that the two share the cores instead of fighting over them.
# Set before torch is imported anywhere, and inherited by the workers and every subprocess.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# The files that hold a worker longest, longest first. With `--dist loadfile
# --no-loadscope-reorder` (pyproject.toml) the workers take files in the order collected, so
# these start at once and the other files fill in beside them. Left to xdist's default order
# (most tests first), the end-to-end files started last and one worker ran alone for minutes.
LONGEST_FIRST = ("test_pipeline.py", "test_queue.py", "test_prepare_stage.py", "test_engine.py",
                 "test_report_stage.py", "test_report_render.py", "test_run_notebook.py")
if missing := [name for name in LONGEST_FIRST if not (ROOT / "tests" / name).exists()]:
    # a renamed file would silently lose its place
    raise pytest.UsageError(f"tests/conftest.py: LONGEST_FIRST names {missing}, which tests/ "
                            "no longer has: update the list")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: order within


# numba's cache filled once, in the background, by the process that starts the workers
# (tests/compile_kernels.py says why); its output goes to a file shown if it fails.
_compiling: tuple[subprocess.Popen, IO[bytes]] | None = None


def pytest_sessionstart(session: pytest.Session) -> None:
    global _compiling
    if hasattr(session.config, "workerinput"):  # an xdist worker: the controller started it
        return
    log = tempfile.TemporaryFile()
    _compiling = subprocess.Popen([sys.executable, str(ROOT / "tests" / "compile_kernels.py")],
                                  stdout=log, stderr=subprocess.STDOUT), log


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if _compiling is not None and _compiling[0].poll() not in (None, 0):
        log = _compiling[1]
        log.seek(0)
        terminalreporter.write_line("tests/compile_kernels.py failed (the tests compiled the "
                                    f"kernels themselves):\n{log.read().decode()[-2000:]}",
                                    yellow=True)


def pytest_unconfigure(config: pytest.Config) -> None:
    if _compiling is not None:
        process, log = _compiling
        if process.poll() is None:  # a short selection of tests: not needed any more
            process.kill()
            process.wait()
        log.close()


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def params_raw() -> dict:
    """params.yaml as read, fresh for each test: some tests change it in place."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture
def layout(tmp_path):
    """The report's inputs of ``hand_made_study`` under ``tmp_path`` (no training): for
    ``test_report_stage`` and ``test_report_render``."""
    from hand_made_study import write_study

    return write_study(tmp_path)


@pytest.fixture(scope="session")
def digits():
    from builders import data_set

    return data_set(two_objects=40)


@pytest.fixture(scope="session")
def small(digits):
    """200 training and 100 test digits (``builders.small_digits``)."""
    from builders import small_digits

    return small_digits(digits)
