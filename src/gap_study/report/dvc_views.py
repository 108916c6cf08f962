"""What DVC shows of the study (``dvc metrics show``, ``dvc exp show``, ``dvc plots show``):
small files the report stage writes beside the report, so that DVC's own views hold what a
reader wants and fit a terminal.

- ``verdicts.json``: one word per claim, under a short key (``CLAIM_KEYS``), so that the five
  verdicts fit an 80-column ``dvc metrics show`` or ``dvc exp show``; it is the one file
  ``dvc.yaml`` declares as metrics, since DVC shows every key of every metrics file as a
  column. ``claims.json`` holds the details of each verdict.
- ``headline.json``: a few numbers per head (``HEADLINE_METRICS``), means over seeds of the
  main runs, and the mean time of a training step over the speed stage's rounds.
- ``plots/training_curves.csv`` and ``plots/learning_curve.csv``: tidy tables (one row per
  run and epoch, one row per run) that ``dvc.yaml``'s top-level ``plots`` draw with a head's
  colour; the tuning curves read the tune stage's own ``tune/tuning_runs.csv``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd

from gap_study.pipeline.io import write_csv, write_json
from gap_study.report.tables import curve_runs, head_order, main_runs

__all__ = [
    "CLAIM_KEYS",
    "HEADLINE_METRICS",
    "NOT_TESTED",
    "VIEW_FILES",
    "headline_record",
    "learning_curve",
    "training_curves",
    "verdict_record",
    "write_dvc_views",
]

# The claims of ``gap_study.report.protocol.CLAIMS``, in the report's order, by the short key
# each has in ``verdicts.json`` (a column header of ``dvc exp show``: short, so that all five
# fit 80 columns beside the experiment's name with one-word verdicts; two metrics' different
# words, ``no difference/undecided``, widen a column past that).
CLAIM_KEYS = {
    "fewer parameters": "params",
    "less overfitting": "overfit",
    "more translation robust": "shifts",
    "faster training": "speed",
    "feature maps tied to classes": "maps",
}
NOT_TESTED = "not tested"  # a claim none of whose primary comparisons could be made

# ``headline.json``'s numbers per head: its key -> the column of the main runs it averages.
# Keys differ from ``metrics.json``'s, whose columns ``dvc exp show`` would otherwise have to
# prefix with the file's path.
HEADLINE_METRICS = {
    "accuracy": "test_accuracy",
    "head_params": "params_head",
    "exact_consistency": "consistency_exact",
    "pointing": "pointing_gradcam_two_objects_recognised",  # the map claim's primary metric
}

# Where each view is written, relative to ``reports/`` (``dvc.yaml`` declares the same paths).
VIEW_FILES = {
    "verdicts": Path("verdicts.json"),
    "headline": Path("headline.json"),
    "training_curves": Path("plots") / "training_curves.csv",
    "learning_curve": Path("plots") / "learning_curve.csv",
}

HISTORY_COLUMNS = ["head", "seed", "epoch", "train_loss", "train_accuracy", "val_loss",
                   "val_accuracy"]
CURVE_COLUMNS = ["head", "seed", "fraction", "train_images", "train_accuracy", "test_accuracy",
                 "test_loss"]


def verdict_record(verdicts: pd.DataFrame) -> dict[str, str]:
    """``verdicts.json``: each claim's verdict word under its ``CLAIM_KEYS`` key, from
    ``claim_verdicts`` (one row per claim and primary metric). A claim whose primary metrics
    got different words has them all, in the protocol's order, joined by ``/`` (``holds/mixed``);
    a claim without rows is ``not tested``."""
    record = {}
    for claim, key in CLAIM_KEYS.items():
        words = verdicts.loc[verdicts["claim"] == claim, "verdict"] if len(verdicts) else []
        record[key] = "/".join(dict.fromkeys(str(w) for w in words)) or NOT_TESTED
    unknown = sorted(set(verdicts["claim"]) - set(CLAIM_KEYS)) if len(verdicts) else []
    if unknown:
        raise ValueError(f"claims without a key in verdicts.json: {', '.join(unknown)}; add "
                         "them to gap_study.report.dvc_views.CLAIM_KEYS")
    return record


def _mean(values: pd.Series) -> float | None:
    """The mean of the finite values, ``None`` (JSON null) when there is none."""
    mean = values.astype(float).mean()
    return None if math.isnan(mean) else float(mean)


def headline_record(results: pd.DataFrame, step_times: pd.DataFrame,
                    heads: Sequence[str]) -> dict[str, dict[str, float | int | None]]:
    """``headline.json``: per head of ``heads`` that has main runs, the mean over seeds of
    each ``HEADLINE_METRICS`` column of its main runs (``null`` where the head has none, e.g.
    no two-object canvases), its head parameters as a count, and ``seconds_per_step``, the
    mean over the speed stage's rounds (``null`` for a head it did not time). The step time
    is measured, so this file changes from run to run, as ``claims.json`` does."""
    main = main_runs(results)
    step = step_times.groupby("head")["seconds_per_step"].mean()
    record: dict[str, dict[str, float | int | None]] = {}
    for head in heads:
        runs = main[main["head"] == head]
        if runs.empty:
            continue
        numbers: dict[str, float | int | None] = {
            key: _mean(runs[column]) if column in runs else None
            for key, column in HEADLINE_METRICS.items()}
        numbers["head_params"] = int(runs["params_head"].max())  # the same for every seed
        numbers["seconds_per_step"] = float(step[head]) if head in step.index else None
        record[head] = numbers
    return record


def training_curves(history: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    """The main runs' per-epoch training and validation loss and accuracy, one row per head,
    seed and epoch (heads in the order of ``heads``): the data of the training-curve plot."""
    rows = main_runs(history)
    rows = rows[rows["head"].isin(heads)]
    return rows.sort_values(["head", "seed", "epoch"], key=head_order(heads),
                            ignore_index=True)[HISTORY_COLUMNS]


def learning_curve(results: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    """Each run of the learning curve (every training fraction, centred): its training images
    and its training and test accuracy and test loss, one row per head, fraction and seed."""
    rows = curve_runs(results)
    rows = rows[rows["head"].isin(heads)].astype({"train_images": int})
    return rows.sort_values(["head", "fraction", "seed"], key=head_order(heads),
                            ignore_index=True)[CURVE_COLUMNS]


def write_dvc_views(reports: Path, *, results: pd.DataFrame, history: pd.DataFrame,
                    step_times: pd.DataFrame, verdicts: pd.DataFrame,
                    heads: Sequence[str]) -> Mapping[str, Path]:
    """Write every file of ``VIEW_FILES`` under ``reports``; returns their paths by name."""
    paths = {name: reports / path for name, path in VIEW_FILES.items()}
    write_json(paths["verdicts"], verdict_record(verdicts))
    write_json(paths["headline"], headline_record(results, step_times, heads))
    write_csv(paths["training_curves"], training_curves(history, heads))
    write_csv(paths["learning_curve"], learning_curve(results, heads))
    return paths
