"""The report's figures (seaborn): one fixed colour per head, bars and lines as the mean over
seeds with the Student-t interval of the tables as error bar or band. ``study_figures`` draws
every figure the study's runs allow, ``save_figures`` writes them as PNG."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from gap_study.nets.architecture import has_class_map
from gap_study.pipeline.io import atomic_path
from gap_study.report.forest import forest_rows, plot_forest, plot_tuning
from gap_study.report.formatting import METRIC_LABELS
from gap_study.report.mechanism import cells_in_order
from gap_study.report.mechanism_training import split_runs
from gap_study.report.stats import t_interval
from gap_study.report.tables import CollectedResults, StudyTables, main_runs

__all__ = ["head_bars", "head_palette", "plot_accuracy_and_gap", "plot_cam_overlays",
           "plot_fraction_curve", "plot_mechanism_heatmaps", "plot_param_counts", "plot_pointing",
           "plot_shift_by_radius", "plot_shift_heatmaps", "plot_shift_training", "plot_stability",
           "plot_step_times", "plot_training_curves", "save_figure", "save_figures",
           "study_figures"]


def head_palette(heads: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per head, the same in every figure."""
    return dict(zip(heads, sns.color_palette("colorblind", len(heads)), strict=True))


def _t_errorbar(confidence: float) -> Callable[[pd.Series], tuple[float, float]]:
    """A seaborn ``errorbar`` callable drawing the Student-t interval used in the tables."""
    def interval(values: pd.Series) -> tuple[float, float]:
        low, high = t_interval(values, confidence)
        mean = float(np.mean(values))
        return (mean, mean) if math.isnan(low) else (low, high)
    return interval


def head_bars(ax: plt.Axes, data: pd.DataFrame, y: str, heads: Sequence[str],
              confidence: float, hue: str | None = None) -> plt.Axes:
    """Bars of ``y`` per head, in the order of ``heads``: the mean over seeds, error bar = the
    Student-t interval (none for a single value). Without ``hue`` one bar per head in the head's
    colour and no legend; with ``hue`` bars per value of that column side by side."""
    colours = {"hue": "head", "palette": head_palette(heads), "legend": False} if hue is None \
        else {"hue": hue}
    sns.barplot(data, x="head", y=y, order=heads, errorbar=_t_errorbar(confidence),
                capsize=0.15, ax=ax, **colours)
    # slanted names: eight heads side by side would run into each other
    plt.setp(ax.get_xticklabels(), rotation=30, ha="right", rotation_mode="anchor")
    return ax


def _head_lines(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, heads: Sequence[str],
                confidence: float, **style: object) -> plt.Axes:
    """Lines of ``y`` against ``x``, one per head in its colour, band = Student-t interval."""
    return sns.lineplot(data, x=x, y=y, hue="head", hue_order=heads, palette=head_palette(heads),
                        errorbar=_t_errorbar(confidence), ax=ax, **style)


def _accuracy_by_split(frame: pd.DataFrame, id_vars: Sequence[str],
                       held_out: str = "test") -> pd.DataFrame:
    """``train_accuracy`` and ``<held_out>_accuracy`` of ``frame`` in long form: column
    ``split`` (train, ``held_out``) and ``accuracy`` (%)."""
    tidy = frame.melt(id_vars=list(id_vars),
                      value_vars=["train_accuracy", f"{held_out}_accuracy"],
                      var_name="split", value_name="accuracy")
    tidy["split"] = tidy["split"].str.removesuffix("_accuracy")
    tidy["accuracy"] *= 100
    return tidy


def plot_param_counts(counts: pd.DataFrame, heads: Sequence[str]) -> plt.Figure:
    """Bars of total and head parameters per head, log scale. ``counts``: head, params_total,
    params_head (one row per head)."""
    tidy = counts.melt(id_vars="head", value_vars=["params_total", "params_head"],
                       var_name="part", value_name="parameters")
    tidy["part"] = tidy["part"].map({"params_total": "whole model", "params_head": "head only"})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    head_bars(ax, tidy, "parameters", heads, 0.95, hue="part")  # one value a bar: no interval
    ax.set_yscale("log")
    ax.set(xlabel="classifier head", ylabel="trainable parameters (log scale)",
           title="Parameters per head")
    for container in ax.containers:
        ax.bar_label(container, fmt="{:,.0f}", fontsize=7, padding=2)
    ax.legend(title=None)
    fig.tight_layout()
    return fig


def plot_accuracy_and_gap(per_seed: pd.DataFrame, heads: Sequence[str],
                          confidence: float = 0.95) -> plt.Figure:
    """Train and test accuracy (left) and the overfitting gap (right), bars = mean over seeds,
    error bars = Student-t interval."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    tidy = _accuracy_by_split(per_seed, ["head", "seed"])
    head_bars(left, tidy, "accuracy", heads, confidence, hue="split")
    low = max(0.0, tidy["accuracy"].min() - 5)
    left.set(ylim=(low, 100.5), xlabel="classifier head", ylabel="accuracy (%)",
             title="Accuracy on centred images")
    left.legend(title=None, loc="lower right")
    head_bars(right, per_seed.assign(gap=per_seed["overfit_gap"] * 100), "gap", heads,
              confidence)
    right.set(xlabel="classifier head", ylabel="train - test accuracy (points)",
              title="Overfitting gap")
    right.axhline(0, color="black", linewidth=0.8)
    fig.tight_layout()
    return fig


def plot_shift_by_radius(by_radius: pd.DataFrame, heads: Sequence[str],
                         confidence: float = 0.95) -> plt.Figure:
    """Accuracy vs shift radius ``max(|dx|, |dy|)``, one line per head, band = t interval
    over seeds. ``by_radius``: head, seed, radius, accuracy."""
    data = by_radius.assign(accuracy=by_radius["accuracy"] * 100)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _head_lines(ax, data, "radius", "accuracy", heads, confidence, marker="o")
    ax.set(xlabel="shift radius max(|dx|, |dy|) (pixels)", ylabel="test accuracy (%)",
           title="Accuracy when the object moves", ylim=(0, 100.5))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(title="head")
    fig.tight_layout()
    return fig


def _heatmap_panel(ax: plt.Axes, grid: pd.DataFrame, title: str) -> None:
    """Accuracy (%) over the offsets of ``grid`` (``dx, dy, accuracy``), mean over its rows.

    matplotlib's ``imshow``, not seaborn's ``heatmap``: that draws the whole figure on every
    call (to check whether tick labels overlap), so a figure of n panels drew n times, and the
    mechanism's 18 panels took 20 s of the report stage."""
    table = grid.groupby(["dy", "dx"])["accuracy"].mean().unstack("dx") * 100
    step = max(1, len(table) // 6)  # at most ~7 tick labels per axis
    ax.imshow(table.to_numpy(), vmin=0, vmax=100, cmap="viridis", interpolation="nearest")
    ax.set_xticks(range(0, table.shape[1], step), labels=table.columns[::step])
    ax.set_yticks(range(0, table.shape[0], step), labels=table.index[::step])
    ax.spines[:].set_visible(False)
    ax.set(title=title, xlabel="dx (px, + = right)", ylabel="dy (px, + = down)")


def _heatmap_grid(panels: Sequence[tuple[str, pd.DataFrame]], columns: int, title: str,
                  size: float = 3.1) -> plt.Figure:
    """One heatmap per ``(title, grid)`` panel, ``columns`` to a row (a figure the page shows
    at about its own size, so that its labels stay legible), axis labels on the outer panels
    only, one colour bar for all."""
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(size * columns + 0.9, size * rows + 0.5),
                             squeeze=False, layout="constrained")
    for i, (ax, (name, grid)) in enumerate(zip(axes.flat, panels, strict=False)):
        _heatmap_panel(ax, grid, name)
        if i % columns:
            ax.set_ylabel("")
        if i + columns < len(panels):
            ax.set_xlabel("")
    for ax in axes.flat[len(panels):]:
        ax.set_axis_off()
    scale = plt.cm.ScalarMappable(norm=plt.Normalize(0, 100), cmap="viridis")
    fig.colorbar(scale, ax=axes, shrink=min(0.8, 2.5 / rows), label="test accuracy (%)")
    fig.suptitle(title)
    return fig


def plot_shift_heatmaps(grid: pd.DataFrame, heads: Sequence[str]) -> plt.Figure:
    """Test accuracy for every offset ``(dx, dy)``, mean over seeds, one panel per head, at
    most three to a row."""
    return _heatmap_grid([(head, grid[grid["head"] == head]) for head in heads],
                         min(3, len(heads)), "Accuracy for each shift of the object")


def plot_mechanism_heatmaps(grid: pd.DataFrame, heads: Sequence[str],
                            cells: Sequence[tuple[str, str]]) -> plt.Figure:
    """The mechanism experiment's accuracy per offset, mean over seeds: one row per head, one
    panel per ``(downsample, padding)`` cell (at most four to a row), all on one colour
    scale."""
    panels = [(f"{head}: {downsample}, {padding}",
               grid[(grid["head"] == head) & (grid["downsample"] == downsample)
                    & (grid["padding"] == padding)])
              for head in heads for downsample, padding in cells]
    return _heatmap_grid(panels, min(4, len(cells)),
                         "Accuracy for each shift of the object, per head and backbone", 2.6)


def plot_step_times(step_times: pd.DataFrame, heads: Sequence[str],
                    confidence: float = 0.95) -> plt.Figure:
    """Milliseconds per training step, heads timed in turns (the speed stage): mean and t
    interval over rounds."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    head_bars(ax, step_times.assign(ms=step_times["seconds_per_step"] * 1000), "ms", heads,
              confidence)
    ax.set(xlabel="classifier head", ylabel="milliseconds per training step",
           title="Training step, heads timed in turns")
    fig.tight_layout()
    return fig


def plot_training_curves(history: pd.DataFrame, heads: Sequence[str],
                         confidence: float = 0.95) -> plt.Figure:
    """Train (running) and validation accuracy per epoch, band = t interval over seeds."""
    tidy = _accuracy_by_split(history, ["head", "seed", "epoch"], held_out="val")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    _head_lines(ax, tidy, "epoch", "accuracy", heads, confidence, style="split")
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy during training",
           ylim=(max(0.0, tidy["accuracy"].min() - 5), 100.5))
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def plot_fraction_curve(curve: pd.DataFrame, heads: Sequence[str],
                        confidence: float = 0.95) -> plt.Figure:
    """Learning curve: test accuracy (left) and overfitting gap (right) against the number of
    training images (log scale), one line per head, band = t interval over seeds."""
    data = curve.assign(test=curve["test_accuracy"] * 100, gap=curve["overfit_gap"] * 100)
    sizes = sorted(data["train_images"].unique())
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, label, title in [
            (axes[0], "test", "test accuracy (%)", "Test accuracy vs training-set size"),
            (axes[1], "gap", "train - test accuracy (points)",
             "Overfitting gap vs training-set size")]:
        _head_lines(ax, data, "train_images", column, heads, confidence, marker="o")
        ax.set_xscale("log")
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
        ax.set(xlabel="training images (log scale; same number of optimizer steps)",
               ylabel=label, title=title)
        ax.legend(title="head")
    axes[1].axhline(0, color="black", linewidth=0.8)
    fig.tight_layout()
    return fig


def plot_shift_training(by_radius: pd.DataFrame, heads: Sequence[str],
                        confidence: float = 0.95) -> plt.Figure:
    """Accuracy vs shift radius, one panel per head, one line per largest training shift, band =
    t interval over seeds. ``by_radius``: head, train_shift, seed, radius, accuracy."""
    data = by_radius.assign(accuracy=by_radius["accuracy"] * 100,
                            trained=by_radius["train_shift"].map(
                                lambda s: "centred" if s == 0 else f"shifts up to {s} px"))
    styles = list(dict.fromkeys(data.sort_values("train_shift")["trained"]))
    columns = min(3, len(heads))  # at most three to a row: legible at the page's width
    rows = math.ceil(len(heads) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.4 * columns + 1, 3.4 * rows + 0.4),
                             sharey=True, squeeze=False)
    for ax, head in zip(axes.flat, heads, strict=False):
        sns.lineplot(data[data["head"] == head], x="radius", y="accuracy", hue="trained",
                     hue_order=styles, marker="o", errorbar=_t_errorbar(confidence), ax=ax,
                     palette=sns.color_palette("rocket", len(styles)), legend=head == heads[-1])
        ax.set(title=head, xlabel="shift radius at test (pixels)", ylabel="test accuracy (%)",
               ylim=(0, 100.5))
        ax.xaxis.get_major_locator().set_params(integer=True)
    for ax in axes.flat[len(heads):]:
        ax.set_axis_off()
    axes.flat[len(heads) - 1].legend(title="trained with", loc="lower left", fontsize=8)
    fig.suptitle("Training with random shifts: accuracy when the object moves")
    fig.tight_layout()
    return fig


def plot_stability(per_seed: pd.DataFrame, heads: Sequence[str],
                   confidence: float = 0.95) -> plt.Figure:
    """Consistency under two random shifts (left, higher is steadier) and the 1-pixel flip
    rate (right, lower is steadier), mean and t interval over seeds."""
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in [(axes[0], "consistency", "same class under two random shifts (%)"),
                              (axes[1], "flip_rate", "class changes under a 1-pixel move (%)")]:
        head_bars(ax, per_seed.assign(value=per_seed[metric] * 100), "value", heads, confidence)
        ax.set(xlabel="classifier head", ylabel=label)
    axes[0].set_title("Consistency (Zhang 2019)")
    axes[1].set_title("1-pixel flip rate (Azulay & Weiss 2019)")
    fig.tight_layout()
    return fig


def plot_pointing(per_seed: pd.DataFrame, heads: Sequence[str],
                  confidence: float = 0.95) -> plt.Figure:
    """Pointing accuracy of the CAM on centred and shifted images, with two references: chance
    and a map always peaking at the canvas centre, on the shifted images."""
    with_cam = [h for h in heads if has_class_map(h)]
    tidy = per_seed[per_seed["head"].isin(with_cam)].melt(
        id_vars=["head", "seed"], value_vars=["pointing_accuracy", "pointing_accuracy_shifted"],
        var_name="images", value_name="pointing")
    tidy["images"] = tidy["images"].map({"pointing_accuracy": "centred",
                                         "pointing_accuracy_shifted": "randomly shifted"})
    tidy["pointing"] *= 100
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(with_cam) + 2) + 2.5, 4))
    head_bars(ax, tidy, "pointing", with_cam, confidence, hue="images")
    for column, label, style in [("pointing_chance", "chance", "--"),
                                 ("pointing_centre_prior_shifted",
                                  "centre prior, shifted images", ":")]:
        level = per_seed[column].mean() * 100
        ax.axhline(level, color="black", linestyle=style, linewidth=1,
                   label=f"{label} {level:.0f}%")
    ax.set(xlabel="classifier head", ylabel="CAM maximum on the object (%)", ylim=(0, 100.5),
           title="Pointing accuracy of class activation maps")
    # beside the axes: bars reach from 0 to 100, so no corner inside is free
    ax.legend(title=None, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    fig.tight_layout()
    return fig


def _cam_panel(ax: plt.Axes, image: np.ndarray, cam: np.ndarray, box: np.ndarray) -> None:
    """One image (channel mean) under its CAM, the object's box in white, the CAM maximum as a
    red cross, no ticks."""
    ax.imshow(image.mean(axis=0), cmap="gray")
    ax.imshow(cam, cmap="jet", alpha=0.45)
    top, left, bottom, right = box
    ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                               fill=False, edgecolor="white", linewidth=1))
    y, x = np.unravel_index(np.argmax(cam), cam.shape)
    ax.plot(x, y, "r+", markersize=9, markeredgewidth=2)
    ax.set_xticks([])
    ax.set_yticks([])


def plot_cam_overlays(cams: Mapping[str, Mapping[str, np.ndarray]],
                      heads: Sequence[str]) -> plt.Figure:
    """Each head's CAM of the true class over a few test images, centred and shifted; the
    object's box in white, the CAM maximum as a red cross."""
    shown = [h for h in heads if h in cams]
    count = len(cams[shown[0]]["labels"])
    # panels small enough that the page shows the figure at about 0.8 of its pixels
    fig, axes = plt.subplots(len(shown), 2 * count, figsize=(1.3 * 2 * count, 1.6 * len(shown)),
                             squeeze=False)
    for r, (row, head) in enumerate(zip(axes, shown, strict=True)):
        data = cams[head]
        dx, dy = (int(v) for v in data["shift"])
        panels = [("", data["images"], data["cams"], data["boxes"]),
                  (f"\nmoved ({dx:+d}, {dy:+d})", data["shifted_images"], data["shifted_cams"],
                   data["shifted_boxes"])]
        for j in range(count):
            for k, (suffix, images, maps, boxes) in enumerate(panels):
                ax = row[2 * j + k]
                _cam_panel(ax, images[j], maps[j], boxes[j])
                if j == 0 and k == 0:
                    ax.set_ylabel(head, fontsize=10)
                if r == 0:
                    ax.set_title(f"class {int(data['labels'][j])}{suffix}", fontsize=10)
    fig.suptitle("Class activation maps of the true class (red +: maximum, white: object)")
    fig.tight_layout()
    return fig


def study_figures(collected: CollectedResults, tables: StudyTables,
                  comparisons: pd.DataFrame, heads: Sequence[str],
                  confidence: float = 0.95) -> dict[str, plt.Figure]:
    """Every figure of the report by name: the learning curve only with two training
    fractions, the ablation only with two training shifts, the CAM figures only when a head
    has class activation maps, the forest plot only when a primary comparison was tested (it
    needs two seeds)."""
    per_seed = tables.main
    figures = {
        "tuning": plot_tuning(collected.tuning_runs, collected.tuning, heads),
        "params": plot_param_counts(per_seed.drop_duplicates("head"), heads),
        "accuracy": plot_accuracy_and_gap(per_seed, heads, confidence),
        "training_curves": plot_training_curves(main_runs(collected.history), heads, confidence),
        "shift_radius": plot_shift_by_radius(tables.by_radius, heads, confidence),
        "shift_heatmaps": plot_shift_heatmaps(main_runs(collected.grid), heads),
        "stability": plot_stability(per_seed, heads, confidence),
        "time": plot_step_times(collected.step_times, heads, confidence),
    }
    if tables.curve["fraction"].nunique() > 1:
        figures["fraction_curve"] = plot_fraction_curve(tables.curve, heads, confidence)
    if tables.ablation_by_radius["train_shift"].nunique() > 1:
        figures["shift_training"] = plot_shift_training(tables.ablation_by_radius, heads,
                                                        confidence)
    if collected.cams:
        figures["pointing"] = plot_pointing(per_seed, heads, confidence)
        figures["cam_overlays"] = plot_cam_overlays(collected.cams, heads)
    mechanism = collected.records["mechanism"]["mechanism"]
    figures["mechanism_heatmaps"] = plot_mechanism_heatmaps(
        split_runs(collected.mechanism_grid, mechanism)[0],  # the cells' centred runs
        [h for h in heads if h in mechanism["heads"]], cells_in_order(mechanism))
    if len(forest_rows(comparisons)):
        figures["forest"] = plot_forest(comparisons, METRIC_LABELS)
    return figures


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 130) -> Path:
    """Write ``fig`` as PNG atomically and close it; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return Path(path)


def save_figures(figures: Mapping[str, plt.Figure], folder: str | Path) -> dict[str, Path]:
    """``save_figure`` each figure as ``<folder>/<name>.png``; returns the paths by name."""
    return {name: save_figure(fig, Path(folder) / f"{name}.png")
            for name, fig in figures.items()}
