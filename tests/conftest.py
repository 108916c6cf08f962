from __future__ import annotations

from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def params_raw() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


@pytest.fixture(scope="session")
def digits():
    from gap_study.prepare import prepare_dataset

    return prepare_dataset("digits", canvas=32, digits_size=16, test_fraction=0.25, split_seed=0)


@pytest.fixture(scope="session")
def small(digits):
    """200 training and 100 test digits (``builders.small_digits``)."""
    from builders import small_digits

    return small_digits(digits)
