"""How many test images the prepare stage keeps, known before it runs: torch-free, so that
the check stage can refuse a setting that asks for more (``gap_study.pipeline.check``).

``digits`` and ``mnist_5k`` draw their test split from their labels (``study_split``, which
the prepare stage uses too); the data sets with an official split have its fixed size. Then
``data.max_test`` caps it.
"""

from __future__ import annotations

import numpy as np

from gap_study.data.splits import stratified_split
from gap_study.pipeline.params import STUDY_SPLIT, DataParams

__all__ = ["OFFICIAL_TEST_IMAGES", "study_labels", "study_split", "test_images"]

# the official test splits (MNIST and Fashion-MNIST: 10,000 images; CIFAR-10: 10,000)
OFFICIAL_TEST_IMAGES = {"mnist": 10_000, "fashion_mnist": 10_000, "cifar10": 10_000}


def study_labels(name: str) -> np.ndarray:
    """The labels of a data set without an official split (``STUDY_SPLIT``), in file order."""
    if name == "digits":
        from sklearn.datasets import load_digits  # slow to import: only when needed

        return load_digits().target.astype(np.int64)
    from gap_study.data.packaged import load_mnist_5k

    return load_mnist_5k()[1]


def study_split(labels: np.ndarray, test_fraction: float,
                split_seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` indices of a data set without an official split: a stratified
    ``test_fraction`` (``data.test_fraction``) for testing, fixed by ``split_seed``."""
    try:
        return stratified_split(labels, test_fraction, split_seed)
    except ValueError as error:
        raise ValueError(f"data.test_fraction = {test_fraction:g}: {error}; change "
                         "data.test_fraction") from error


def test_images(settings: DataParams) -> int:
    """How many test images the prepare stage keeps for the ``data`` section ``settings``."""
    if settings.name in STUDY_SPLIT:
        count = len(study_split(study_labels(settings.name), settings.test_fraction,
                                settings.split_seed)[1])
    else:
        count = OFFICIAL_TEST_IMAGES[settings.name]
    return count if settings.max_test is None else min(count, settings.max_test)
