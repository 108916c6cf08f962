"""The report's facts on what global pooling does with the backbone's feature map: translation
robustness (shift radius, stride alignment, prediction stability, training with random
shifts), class activation maps and global sum vs global average pooling. Tables are frames of
display strings; the template (``templates/report.md.j2``) says what they mean."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import pandas as pd

from gap_study.nets.architecture import has_class_map, pools_globally
from gap_study.report.formatting import grouped_stat_table, stat_table
from gap_study.report.stats import summarize
from gap_study.report.tables import StudyTables, phase_accuracy, phase_table

__all__ = ["Ablation", "Alignment", "CamFacts", "GradCam", "SumPooling", "Translation",
           "TwoObjects", "ablation_facts", "cam_facts", "sum_pooling_facts",
           "translation_facts"]


@dataclass(frozen=True)
class Alignment:
    """Accuracy at shifts by whole feature-map cells against the other shifts, per head
    (``means``: head -> (whole-cell, other)), and the table by phase (a CSV)."""

    table: pd.DataFrame
    means: dict[str, tuple[float, float]]
    phases: pd.DataFrame


@dataclass(frozen=True)
class Translation:
    max_shift: int
    stride: int
    by_radius: pd.DataFrame
    over_grid: pd.DataFrame
    alignment: Alignment | None  # None when the grid does not reach the stride
    stability: pd.DataFrame


def _radius_table(by_radius: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    """Head x shift radius: test accuracy (%, mean over seeds), one decimal."""
    wide = (by_radius.groupby(["head", "radius"], as_index=False)["accuracy"].mean()
            .pivot(index="head", columns="radius", values="accuracy")
            .reindex(list(heads)) * 100).round(1)
    wide.columns = [f"r={int(c)}" for c in wide.columns]
    return wide.reset_index().astype(str)


def translation_facts(tables: StudyTables, grid: pd.DataFrame, heads: Sequence[str],
                      max_shift: int, stride: int, confidence: float) -> Translation:
    """The main runs' translation robustness (``grid``: their shift grid)."""
    aggregate, alignment = tables.aggregate, None
    if stride <= max_shift:
        metrics = ["aligned_shift_accuracy", "other_shift_accuracy"]
        summary = summarize(phase_accuracy(grid, stride), "head", metrics, confidence)
        means = summary.pivot(index="head", columns="metric", values="mean")
        alignment = Alignment(
            stat_table(summary, metrics, [f"shifts by multiples of {stride} px",
                                          "all other shifts"], heads),
            {h: (float(means.loc[h, metrics[0]]), float(means.loc[h, metrics[1]]))
             for h in heads},
            phase_table(grid, stride, heads))
    return Translation(
        max_shift, stride, _radius_table(tables.by_radius, heads),
        stat_table(aggregate, ["shift_accuracy_mean", "shift_accuracy_worst"],
                   ["mean over the grid", "worst offset"], heads),
        alignment,
        stat_table(aggregate, ["consistency", "flip_rate"],
                   ["consistency", "1-pixel flip rate"], heads))


@dataclass(frozen=True)
class Ablation:
    """Training with random shifts: the shifts, each head's mean accuracy over the grid at the
    smallest and the largest (``gains``), and the whole table (a CSV)."""

    shifts: list[int]
    gains: dict[str, tuple[float, float]]
    table: pd.DataFrame


def ablation_facts(ablation_aggregate: pd.DataFrame,
                   heads: Sequence[str]) -> Ablation | None:
    """``None`` when the study trained with one shift only."""
    shifts = sorted(int(s) for s in ablation_aggregate["train_shift"].unique())
    if len(shifts) < 2:
        return None
    table = grouped_stat_table(
        ablation_aggregate, ["head", "train_shift"],
        ["test_accuracy", "shift_accuracy_mean", "shift_accuracy_worst", "consistency",
         "flip_rate"],
        ["centred test accuracy", "mean over the grid", "worst offset", "consistency",
         "1-pixel flip rate"], heads)
    mean = ablation_aggregate[ablation_aggregate.metric == "shift_accuracy_mean"] \
        .set_index(["head", "train_shift"])["mean"]
    return Ablation(shifts, {h: (float(mean[h, shifts[0]]), float(mean[h, shifts[-1]]))
                             for h in heads},
                    table.rename(columns={"train_shift": "largest training shift (px)"}))


@dataclass(frozen=True)
class GradCam:
    """Grad-CAM pointing on shifted images against the ink map: the ink map's level, the best
    head's and whether the ink map is above every head."""

    ink: float
    best_head: str
    best: float
    table: pd.DataFrame

    @property
    def ink_above_all(self) -> bool:
        return self.ink > self.best


@dataclass(frozen=True)
class TwoObjects:
    """Pointing at each class's own object on two-object canvases: the references, Grad-CAM
    per head highest first, the heads above the ink map and above ``dense``."""

    ink: float
    centre: float
    chance: float
    ranked: list[tuple[str, float]]
    above_ink: list[str]
    below_ink: list[str]
    dense: float | None
    above_dense: list[str]
    table: pd.DataFrame
    # protocol 4's primary metric: per head, the share of objects it recognises alone at their
    # position and Grad-CAM's pointing over those (``nan`` where it recognises none)
    recognised: list[tuple[str, float, float]]


@dataclass(frozen=True)
class CamFacts:
    with_cam: list[str]
    flatten: list[str]  # no map: a flatten head
    hidden: list[str]  # no map: a hidden layer after the pooling
    # the references on the shifted images, the same for every head (``nan`` when not measured)
    centre_prior: float
    chance: float
    pointing: pd.DataFrame | None  # CAM pointing, where there is no Grad-CAM table to join
    gradcam: GradCam | None
    two_objects: TwoObjects | None


def _gradcam(aggregate: pd.DataFrame, heads: Sequence[str]) -> GradCam | None:
    gradcam = aggregate[aggregate.metric == "pointing_gradcam_shifted"].set_index("head")["mean"]
    ink = aggregate[aggregate.metric == "pointing_ink_shifted"]["mean"]
    shown = [h for h in heads if h in gradcam.index]
    if not shown or ink.empty:
        return None
    best = str(gradcam.loc[shown].idxmax())
    return GradCam(float(ink.mean()), best, float(gradcam.loc[best]), stat_table(
        aggregate, ["pointing_gradcam", "pointing_gradcam_shifted"],
        ["Grad-CAM, centred", "Grad-CAM, shifted"], shown))


_TWO_OBJECTS = ["pointing_two_objects", "pointing_gradcam_two_objects",
                "pointing_ink_two_objects", "pointing_centre_prior_two_objects",
                "pointing_chance_two_objects"]


def _two_objects(aggregate: pd.DataFrame, heads: Sequence[str]) -> TwoObjects | None:
    """``None`` without two-object canvases (``data.two_objects`` is 0)."""
    means = (aggregate[aggregate.metric.isin([*_TWO_OBJECTS, *_RECOGNISED])]
             .set_index(["head", "metric"])["mean"].unstack())
    shown = [h for h in heads if h in means.index]
    gradcam = means.get("pointing_gradcam_two_objects", pd.Series(dtype=float)).reindex(shown)
    if gradcam.isna().all():
        return None
    ink, centre, chance = (float(means[m].mean()) for m in _TWO_OBJECTS[2:])
    ranked = list(gradcam.sort_values(ascending=False, kind="stable").index)
    dense = float(gradcam["dense"]) if "dense" in gradcam.index else None
    recognised = [m for m in _RECOGNISED if m in means]
    return TwoObjects(
        ink, centre, chance, [(h, float(gradcam[h])) for h in ranked],
        [h for h in ranked if gradcam[h] > ink], [h for h in ranked if not gradcam[h] > ink],
        dense, [h for h in shown if h != "dense" and dense is not None and gradcam[h] > dense],
        stat_table(aggregate, [*_TWO_OBJECTS, *recognised],
                   ["CAM", "Grad-CAM", "ink map", "centre prior", "chance",
                    *(_RECOGNISED[m] for m in recognised)], shown),
        _recognised(means, shown))


# the protocol-4 columns and their names in the table, where the evaluation has them
_RECOGNISED = {"recognised_two_objects": "recognised alone",
               "pointing_gradcam_two_objects_recognised": "Grad-CAM, recognised objects",
               "pointing_ink_two_objects_recognised": "ink map, recognised objects"}


def _recognised(means: pd.DataFrame, shown: Sequence[str]) -> list[tuple[str, float, float]]:
    """``(head, share recognised, Grad-CAM pointing on those)`` per head in ``shown`` order,
    from the heads' mean two-object metrics (a column per metric)."""
    if not {"recognised_two_objects", "pointing_gradcam_two_objects_recognised"} <= set(means):
        return []
    return [(h, float(means.loc[h, "recognised_two_objects"]),
             float(means.loc[h, "pointing_gradcam_two_objects_recognised"]))
            for h in shown]


def cam_facts(aggregate: pd.DataFrame, heads: Sequence[str]) -> CamFacts:
    """Class activation maps and Grad-CAM: who has a map, pointing, and the references on the
    shifted images (chance and the centre prior, the same for every head: their mean)."""
    with_cam = [h for h in heads if has_class_map(h)]
    without = [h for h in heads if h not in with_cam]
    pointing = stat_table(
        aggregate, ["pointing_accuracy", "pointing_accuracy_shifted"],
        ["CAM, centred", "CAM, shifted"], with_cam) if with_cam else None
    centre, chance = (float(aggregate.loc[aggregate.metric == m, "mean"].mean())
                      for m in ("pointing_centre_prior_shifted", "pointing_chance"))
    gradcam = _gradcam(aggregate, heads)
    if gradcam is not None and pointing is not None:  # one table: CAM beside Grad-CAM
        merged = gradcam.table.merge(pointing, on="head", how="left").fillna("")
        gradcam = replace(gradcam, table=merged[["head", *pointing.columns[1:],
                                                  *gradcam.table.columns[1:]]])
        pointing = None
    return CamFacts(with_cam, [h for h in without if not pools_globally(h)],
                    [h for h in without if pools_globally(h)], centre, chance, pointing,
                    gradcam, _two_objects(aggregate, heads))


_SUM_METRICS = {"test_accuracy": "test accuracy", "consistency_exact": "exact consistency",
                "shift_accuracy_mean": "accuracy over the shift grid"}


@dataclass(frozen=True)
class SumPooling:
    """Global sum vs global average: the factor H·W as the evaluate stage measured it and,
    when ``gap``, ``gsp`` and ``gsp_scaled`` ran, their means (``results``: head -> learning
    rate and (label, mean, std) per metric) and largest distances from ``gap`` in points."""

    channels: int
    height: int
    width: int
    ratio: float
    deviation: float
    shown: bool  # a sum-pooling head ran
    results: dict[str, tuple[float, list[tuple[str, float, float]]]] | None
    scaled: float | None
    summed: float | None
    margin: float

    @property
    def reproduces(self) -> bool:
        return bool(self.scaled is not None and self.scaled < self.margin * 100)


def sum_pooling_facts(aggregate: pd.DataFrame, heads: Sequence[str],
                      feature_map: Mapping[str, Any], learning_rates: Mapping[str, float],
                      margin: float) -> SumPooling:
    """``gsp_scaled`` reproduces ``gap`` when their means differ by less than ``margin`` (the
    accuracy margin, a fraction) on every compared metric."""
    channels, height, width = feature_map["shape"]
    check = feature_map["sum_over_average"]
    base = (channels, height, width, check["ratio_mean"], check["max_relative_deviation"],
            bool({"gsp", "gsp_scaled"} & set(heads)))
    trio = ("gap", "gsp", "gsp_scaled")
    if not set(trio) <= set(heads):
        return SumPooling(*base, None, None, None, margin)
    stats = aggregate.set_index(["head", "metric"])
    compared = [m for m in _SUM_METRICS if all((h, m) in stats.index for h in trio)]

    def largest_gap(head: str) -> float:
        return float(max(abs(stats.loc[(head, m), "mean"] - stats.loc[("gap", m), "mean"]) * 100
                         for m in compared))

    results = {h: (learning_rates[h], [(_SUM_METRICS[m], float(stats.loc[(h, m), "mean"]),
                                        float(stats.loc[(h, m), "std"])) for m in compared])
               for h in ("gap", "gsp_scaled", "gsp")}
    return SumPooling(*base, results, largest_gap("gsp_scaled"), largest_gap("gsp"), margin)
