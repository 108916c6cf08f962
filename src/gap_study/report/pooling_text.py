"""The report's sections on what global pooling does with the backbone's feature map:
translation robustness (shift radius, stride alignment, prediction stability, training with
random shifts), class activation maps, and global sum vs global average pooling. Each
section is a list of Markdown lines."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from gap_study.nets.architecture import has_class_map, pools_globally
from gap_study.report.formatting import (
    format_percent,
    grouped_stat_table,
    markdown_table,
    stat_table,
)
from gap_study.report.stats import summarize
from gap_study.report.tables import StudyTables, phase_accuracy, phase_table

__all__ = ["ablation_section", "cam_section", "sum_pooling_section", "translation_section"]


def _radius_table(by_radius: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    """Head x shift radius: test accuracy (%, mean over seeds), one decimal."""
    wide = (by_radius.groupby(["head", "radius"], as_index=False)["accuracy"].mean()
            .pivot(index="head", columns="radius", values="accuracy")
            .reindex(list(heads)) * 100).round(1)
    wide.columns = [f"r={int(c)}" for c in wide.columns]
    return wide.reset_index().astype(str)


def _alignment_lines(grid: pd.DataFrame, stride: int, max_shift: int, heads: Sequence[str],
                     confidence: float) -> list[str]:
    """Accuracy at shifts by whole feature-map cells vs the others (``grid``: the main runs),
    or a note that the shift grid does not reach the stride."""
    if stride > max_shift:
        return [f"(The shift grid does not reach the backbone's stride of {stride} pixels, so "
                "shifts by whole feature-map cells are not separated from the others.)", ""]
    metrics = ["aligned_shift_accuracy", "other_shift_accuracy"]
    summary = summarize(phase_accuracy(grid, stride), "head", metrics, confidence)
    means = summary.pivot(index="head", columns="metric", values="mean")
    drops = ", ".join(f"`{h}` {means.loc[h, metrics[0]] * 100:.1f}% vs "
                      f"{means.loc[h, metrics[1]] * 100:.1f}%" for h in heads)
    return [
        f"The backbone subsamples by {stride} (its downsampling layers), so a shift of the "
        f"image by a multiple of {stride} pixels moves the feature map by whole cells, which "
        "global pooling ignores, while any other shift changes the map itself. Accuracy at "
        f"shifts by whole cells vs all other non-zero shifts: {drops}. Global pooling makes "
        "the head invariant to shifts of the feature map, not of the image (compare Zhang "
        "2019 and Kayhan & van Gemert 2020 in `docs/study.md`).",
        "",
        markdown_table(stat_table(summary, metrics, [f"shifts by multiples of {stride} px",
                                                     "all other shifts"], heads)),
        "",
        f"By phase `(dx mod {stride}, dy mod {stride})` of the non-zero offsets (test accuracy, "
        "%, mean over seeds); phase (0,0) holds the whole-cell shifts, and a backbone that "
        "commuted with every shift would make all columns equal:",
        "",
        markdown_table(phase_table(grid, stride, heads)),
        "",
    ]


def _stability_lines(aggregate: pd.DataFrame, heads: Sequence[str],
                     figures: Mapping[str, str], max_shift: int) -> list[str]:
    """Subsection "Prediction stability": consistency and the 1-pixel flip rate."""
    means = aggregate[aggregate.metric == "flip_rate"].set_index("head")["mean"]
    flips = ", ".join(f"`{h}` {means[h]:.3f}" for h in heads)
    return [
        "### Prediction stability",
        "",
        f"Consistency: the probability that two independent random shifts of a test image "
        f"(offsets uniform in [-{max_shift}, {max_shift}]², a fixed evaluation seed) get the "
        "same class, right or wrong (Zhang 2019). Flip rate: the probability that the class "
        "changes when the object moves by one pixel, averaged over the four directions "
        "(Azulay & Weiss 2019).",
        "",
        markdown_table(stat_table(aggregate, ["consistency", "flip_rate"],
                                  ["consistency", "1-pixel flip rate"], heads)),
        "",
        f"Flip rates here: {flips}. Azulay & Weiss report 0.18-0.20 for ImageNet CNNs when a "
        "downscaled image moves diagonally by one pixel on a black canvas (their protocol "
        "closest to ours); ours moves along one axis (the four directions of `docs/study.md`, "
        "\"Metrics\"), not diagonally, and the data sets differ, so only the order of "
        "magnitude compares.",
        "",
        f"![Consistency and flip rate]({figures['stability']})",
        "",
    ]


def translation_section(tables: StudyTables, grid: pd.DataFrame, heads: Sequence[str],
                        figures: Mapping[str, str], max_shift: int, stride: int,
                        confidence: float) -> list[str]:
    """Section "Translation robustness" (``grid``: the main runs' shift grid): accuracy by
    shift radius and over the grid, stride alignment, prediction stability, the heatmaps."""
    return [
        "## Translation robustness",
        "",
        f"Test accuracy with the object moved by every integer offset (dx, dy) in "
        f"[-{max_shift}, {max_shift}]² on the canvas (zero fill), "
        "summarised by the shift radius max(|dx|, |dy|) (mean over seeds, %), and over the "
        "whole grid (mean and worst offset).",
        "",
        markdown_table(_radius_table(tables.by_radius, heads)),
        "",
        markdown_table(stat_table(tables.aggregate,
                                  ["shift_accuracy_mean", "shift_accuracy_worst"],
                                  ["mean over the grid", "worst offset"], heads)),
        "",
        f"![Accuracy vs shift radius]({figures['shift_radius']})",
        "",
        *_alignment_lines(grid, stride, max_shift, heads, confidence),
        *_stability_lines(tables.aggregate, heads, figures, max_shift),
        f"![Accuracy per offset]({figures['shift_heatmaps']})",
        "",
    ]


def ablation_section(ablation_aggregate: pd.DataFrame, heads: Sequence[str],
                     figures: Mapping[str, str], max_shift: int) -> list[str]:
    """Subsection "Training with random shifts", or how to add a training shift."""
    shifts = sorted(int(s) for s in ablation_aggregate["train_shift"].unique())
    if len(shifts) < 2:
        return ["### Training with random shifts", "", "Only one training shift "
                "(`train.shift`): add e.g. `[0, 4]` to compare heads trained centred with "
                "heads trained on moved objects.", ""]
    table = grouped_stat_table(
        ablation_aggregate, ["head", "train_shift"],
        ["test_accuracy", "shift_accuracy_mean", "shift_accuracy_worst", "consistency",
         "flip_rate"],
        ["centred test accuracy", "mean over the grid", "worst offset", "consistency",
         "1-pixel flip rate"], heads)
    table = table.rename(columns={"train_shift": "largest training shift (px)"})
    mean = ablation_aggregate[ablation_aggregate.metric == "shift_accuracy_mean"] \
        .set_index(["head", "train_shift"])["mean"]
    gains = ", ".join(f"`{h}` {mean[h, shifts[0]] * 100:.1f}% -> {mean[h, shifts[-1]] * 100:.1f}%"
                      for h in heads)
    return [
        "### Training with random shifts",
        "",
        f"The same heads trained on the whole training set with each image moved by a random "
        f"offset in [-s, s]² every time it is used, s in {shifts} pixels, and evaluated on the "
        f"same shift grid ([-{max_shift}, {max_shift}]²). Mean accuracy over the grid, from "
        f"s = {shifts[0]} to s = {shifts[-1]}: {gains}. Whether pooling still beats `dense` "
        "once both see moved objects is in the claims table (setting \"random shifts\").",
        "",
        markdown_table(table),
        "",
        f"![Training with random shifts]({figures['shift_training']})",
        "",
    ]


_CAM_EXPLAINED = (
    "For a head whose classifier is linear on pooled features, the class activation map is "
    "`M_c(x, y) = sum_k w_ck f_k(x, y)` (Zhou et al. 2016), upsampled to the canvas; for "
    "`gap` and `gsp` the class score is the mean (sum) of `M_c` over positions, for `gmp` it "
    "is built from each channel's own maximum, so there `M_c` shows where the evidence lies "
    "but is not pooled into the score as it stands. Pointing accuracy: the share of test "
    "images whose map for the true class peaks inside the object's bounding box. Two "
    "references: chance (the box's share of the canvas) and the *centre prior*, a map that "
    "always peaks at the canvas centre. Every centred object's box holds the centre, so on "
    "centred images the centre prior scores 100% and pointing there is no evidence; on the "
    "randomly shifted images pointing is compared with the centre prior on the same images "
    "(secondary rows of the claims table). The claim itself is tested on canvases holding two "
    "objects (below).")


def _gradcam_lines(aggregate: pd.DataFrame, heads: Sequence[str]) -> list[str]:
    """Grad-CAM pointing of every head, against the centre prior and the ink map on the same
    shifted images, and what the ink map says about the test itself."""
    gradcam = aggregate[aggregate.metric == "pointing_gradcam_shifted"].set_index("head")["mean"]
    ink = aggregate[aggregate.metric == "pointing_ink_shifted"]["mean"]
    shown = [h for h in heads if h in gradcam.index]
    if not shown or ink.empty:
        return []
    best = gradcam.loc[shown].idxmax()
    ink_level, best_level = float(ink.mean()), float(gradcam.loc[best])
    comparison = ("above every head's Grad-CAM" if ink_level > best_level else
                  f"not above every head's Grad-CAM (`{best}` {best_level * 100:.1f}%)")
    return [
        "Grad-CAM (Selvaraju et al. 2017) gives every head a map, `dense` included: "
        "`ReLU(sum_k a_k f_k)`, `a_k` the true class score's gradient with respect to map `k` "
        "averaged over positions; for `gap` it is the CAM up to a positive factor. The *ink "
        "map* is a reference that knows nothing of classes: the image blurred by a 3x3 mean. "
        f"On the shifted images it points at the object in {ink_level * 100:.1f}% of cases, "
        f"{comparison}: with one object on a blank canvas, pointing at the object shows that "
        "a map finds the ink, not that it is tied to the class. Comparisons of these maps "
        "with `dense` and with the ink map are secondary rows of the claims table; the "
        "two-object canvases below ask the question the ink map cannot answer.",
        "",
        markdown_table(stat_table(aggregate, ["pointing_gradcam", "pointing_gradcam_shifted",
                                              "pointing_ink_shifted",
                                              "pointing_centre_prior_shifted"],
                                  ["Grad-CAM, centred images", "Grad-CAM, shifted images",
                                   "ink map, shifted images", "centre prior, shifted images"],
                                  shown)),
        "",
    ]


_TWO_OBJECTS = ["pointing_two_objects", "pointing_gradcam_two_objects",
                "pointing_ink_two_objects", "pointing_centre_prior_two_objects",
                "pointing_chance_two_objects"]


def _two_object_lines(aggregate: pd.DataFrame, heads: Sequence[str]) -> list[str]:
    """Subsection "Two objects on a canvas": each head's maps (Grad-CAM for all, CAM where
    there is one) pointing at each class's own object, against the ink map, the centre prior
    and chance on the same canvases; the sentences are computed from the means."""
    lines = ["### Two objects on a canvas", ""]
    means = (aggregate[aggregate.metric.isin(_TWO_OBJECTS)].set_index(["head", "metric"])
             ["mean"].unstack())
    shown = [h for h in heads if h in means.index]
    gradcam = means.get("pointing_gradcam_two_objects", pd.Series(dtype=float)).reindex(shown)
    if gradcam.isna().all():
        return [*lines, "No two-object canvases in this study (`data.two_objects` is 0), so the "
                "map claim's primary test did not run.", ""]
    ink, centre, chance = (float(means[m].mean()) for m in _TWO_OBJECTS[2:])
    ranked = list(gradcam.sort_values(ascending=False, kind="stable").index)
    ranking = ", ".join(f"`{h}` {format_percent(gradcam[h])}" for h in ranked)
    above = [h for h in ranked if gradcam[h] > ink]
    below = [h for h in ranked if h not in above]
    ink_words = f"above the ink map: {_names(above) if above else 'no head'}"
    if above and below:
        ink_words += f"; not above it: {_names(below)}"
    dense = ""
    if "dense" in gradcam.index:
        beat = [h for h in shown if h != "dense" and gradcam[h] > gradcam["dense"]]
        dense = (f" Above `dense`'s {format_percent(gradcam['dense'])}: "
                 f"{_names(beat) if beat else 'no other head'}.")
    return [
        *lines,
        "Each canvas holds two test objects of different classes at random positions "
        "(`data.two_objects`, seeded by `data.split_seed`); for each canvas and each of its two "
        "classes, that class's map should peak inside that class's own box. The ink map has one "
        "peak for both classes, so it scores at most 50%; a map tied to the classes can score "
        f"up to 100%. Here the ink map scores {format_percent(ink)}, the centre prior "
        f"{format_percent(centre)} and chance {format_percent(chance)}. Grad-CAM, highest first: "
        f"{ranking}; {ink_words}.{dense} Grad-CAM against `dense` and against the ink map is "
        "the claim's primary test (the claims table says which differences the seeds "
        "support); the CAM against the ink map is secondary.",
        "",
        markdown_table(stat_table(aggregate, _TWO_OBJECTS,
                                  ["CAM", "Grad-CAM", "ink map", "centre prior", "chance"],
                                  shown)),
        "",
    ]


def cam_section(aggregate: pd.DataFrame, heads: Sequence[str], figures: Mapping[str, str],
                per_seed: pd.DataFrame) -> list[str]:
    """Section "Class activation maps": pointing accuracy against chance and the centre
    prior, Grad-CAM of every head against the ink map, the example maps, and pointing at each
    class's own object on the two-object canvases."""
    with_cam = [h for h in heads if has_class_map(h)]
    lines = ["## Class activation maps", ""]
    if not with_cam:
        return [*lines, "No head in this run has class activation maps.", "",
                *_gradcam_lines(aggregate, heads), *_two_object_lines(aggregate, heads)]
    without = [h for h in heads if h not in with_cam]
    lines += [_CAM_EXPLAINED, ""]
    flatten = [h for h in without if not pools_globally(h)]
    hidden = [h for h in without if pools_globally(h)]
    if flatten:
        lines += [f"No such map for {_names(flatten)}: the first linear layer mixes every "
                  "position of the feature map into each unit, so no score can be attributed to "
                  "a position without a separate method (e.g. gradients).", ""]
    if hidden:
        lines += [f"No such map for {_names(hidden)} either: a hidden layer and a ReLU stand "
                  "between the pooled features and the scores, so no class has one linear map "
                  "over positions.", ""]
    return [
        *lines,
        markdown_table(stat_table(aggregate, ["pointing_accuracy", "pointing_accuracy_shifted",
                                              "pointing_centre_prior_shifted", "pointing_chance"],
                                  ["centred images", "randomly shifted images",
                                   "centre prior, shifted images", "chance"], with_cam)),
        "",
        *_gradcam_lines(aggregate, heads),
        f"![Pointing accuracy]({figures['pointing']})",
        "",
        f"![Class activation maps]({figures['cam_overlays']})",
        "",
        *_two_object_lines(aggregate, heads),
    ]


def sum_pooling_section(aggregate: pd.DataFrame, heads: Sequence[str],
                        feature_map: Mapping[str, Any], learning_rates: Mapping[str, float],
                        margin: float) -> list[str]:
    """Section "Global sum vs global average pooling": the factor H·W as the evaluate stage
    measured it on the backbone's last map (``feature_map``, from the evaluation run record),
    and, when ``gap``, ``gsp`` and ``gsp_scaled`` ran, what the factor does to training:
    ``gsp_scaled`` reproduces ``gap`` when their means differ by less than ``margin`` (the
    accuracy margin, a fraction) on every compared metric."""
    channels, height, width = feature_map["shape"]
    check = feature_map["sum_over_average"]
    lines = [
        "## Global sum vs global average pooling",
        "",
        f"The write-up treats GAP as a sum (\"it is treated as a sum in the paper\"). Global "
        f"sum pooling is GAP times H·W: on random {height}x{width}x{channels} maps (this "
        f"backbone's last map) sum / average = {check['ratio_mean']:.4f} = {height}·{width}, "
        f"the largest relative deviation from {height * width} being "
        f"{check['max_relative_deviation']:.1e} (float32 rounding). For inference the factor "
        "is unnecessary (a linear layer can absorb it), but it scales the logits and their "
        "gradients, and so what a learning rate does. `gsp_scaled` is `gsp` with its "
        "classifier's initial weights and Adam learning rate divided by H·W and Adam's eps "
        "multiplied by it: algebraically it then trains exactly as `gap` does (a unit test "
        "pins it to rounding over several steps).",
        "",
    ]
    if not {"gap", "gsp", "gsp_scaled"} <= set(heads):
        return [*lines, "What that does to training here: add `gap`, `gsp` and `gsp_scaled` "
                "to `heads`.", ""]
    stats = aggregate.set_index(["head", "metric"])
    compared = [m for m in ("test_accuracy", "consistency_exact", "shift_accuracy_mean")
                if all((h, m) in stats.index for h in ("gap", "gsp", "gsp_scaled"))]

    def result(head: str) -> str:
        values = ", ".join(f"{_LABELS[m]} {stats.loc[(head, m), 'mean'] * 100:.1f} ± "
                           f"{stats.loc[(head, m), 'std'] * 100:.1f}%" for m in compared)
        return f"`{head}` (learning rate {learning_rates[head]:g}): {values}"

    def largest_gap(head: str) -> float:
        return max(abs(stats.loc[(head, m), "mean"] - stats.loc[("gap", m), "mean"]) * 100
                   for m in compared)

    scaled, summed = largest_gap("gsp_scaled"), largest_gap("gsp")
    reproduces = scaled < margin * 100
    verdict = (f"`gsp_scaled` reproduces `gap` (at most {scaled:.1f} points apart on these "
               "metrics, the rest being rounding that training amplifies), so whatever "
               f"separates `gsp` from `gap` (up to {summed:.1f} points here) comes from the "
               "factor's effect on training, larger logits at initialisation and a classifier "
               "step H·W times larger relative to its weights, not from summing instead of "
               "averaging" if reproduces else
               f"`gsp_scaled` does not reproduce `gap` here ({scaled:.1f} points apart on "
               f"these metrics, beyond the {margin * 100:g}-point margin), so the scaling "
               "argument does not explain all of `gsp`'s difference on this run")
    return [*lines, "Here, main runs, mean ± standard deviation over seeds: "
            + "; ".join(result(h) for h in ("gap", "gsp_scaled", "gsp")) + ". " + verdict
            + ". The claims table compares each with `dense` like every other head.", ""]


_LABELS = {"test_accuracy": "test accuracy", "consistency_exact": "exact consistency",
           "shift_accuracy_mean": "accuracy over the shift grid"}


def _names(heads: Sequence[str]) -> str:
    """``a``, ``a` and `b``, ``a`, `b` and `c``, in backticks."""
    quoted = [f"`{h}`" for h in heads]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} and {quoted[-1]}"
