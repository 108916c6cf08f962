from __future__ import annotations

import os
from pathlib import Path

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


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture
def params_raw() -> dict:
    """params.yaml as read, fresh for each test: some tests change it in place."""
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def digits():
    from builders import data_set

    return data_set(two_objects=40)


@pytest.fixture(scope="session")
def small(digits):
    """200 training and 100 test digits (``builders.small_digits``)."""
    from builders import small_digits

    return small_digits(digits)
