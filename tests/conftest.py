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
