"""Aggregation over seeds, claim verdicts, seaborn figures and the Markdown/HTML report.

Statistics follow STUDY.md: every metric per head as mean, standard deviation and a Student-t
confidence interval over seeds. A claim of the write-up is judged per pooling head against
``dense`` from the Welch-t interval of the difference of means; the verdict is computed from
those numbers, never typed in.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import markdown
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from scipy import stats

from gap_study.io import atomic_path, write_text
from gap_study.pooling import global_avg_pool, global_sum_pool

__all__ = [
    "CLAIMS",
    "Claim",
    "ablation_runs",
    "claim_table",
    "curve_runs",
    "head_palette",
    "main_runs",
    "markdown_to_html",
    "plot_accuracy_and_gap",
    "plot_fraction_curve",
    "plot_param_counts",
    "plot_shift_by_radius",
    "plot_shift_heatmaps",
    "plot_shift_training",
    "plot_time_per_epoch",
    "plot_training_curves",
    "save_figure",
    "study_claims",
    "summarize",
    "t_interval",
    "welch_interval",
]


# ---------------------------------------------------------------- statistics


def t_interval(values: Sequence[float] | np.ndarray,
               confidence: float = 0.95) -> tuple[float, float]:
    """Student-t confidence interval of the mean; ``(nan, nan)`` with fewer than two values."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    mean, sem = x.mean(), x.std(ddof=1) / math.sqrt(len(x))
    half = stats.t.ppf((1 + confidence) / 2, len(x) - 1) * sem
    return float(mean - half), float(mean + half)


def welch_interval(a: Sequence[float], b: Sequence[float],
                   confidence: float = 0.95) -> tuple[float, float, float]:
    """``mean(a) - mean(b)`` and its Welch-t confidence interval.

    When both samples have zero spread (e.g. parameter counts) the difference is exact and the
    interval collapses to it; with fewer than two values on a side the interval is ``nan``.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    diff = float(a.mean() - b.mean())
    if len(a) < 2 or len(b) < 2:
        return diff, math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return diff, diff, diff
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = stats.t.ppf((1 + confidence) / 2, dof) * se
    return diff, diff - half, diff + half


def summarize(frame: pd.DataFrame, by: str | list[str], metrics: Sequence[str],
              confidence: float = 0.95) -> pd.DataFrame:
    """Tidy aggregate over seeds: one row per group and metric with
    ``n, mean, std, ci_low, ci_high``."""
    by = [by] if isinstance(by, str) else list(by)
    rows = []
    for keys, group in frame.groupby(by, sort=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        for metric in metrics:
            values = group[metric].to_numpy(dtype=float)
            low, high = t_interval(values, confidence)
            rows.append({**dict(zip(by, keys, strict=True)), "metric": metric,
                         "n": len(values), "mean": values.mean(),
                         "std": values.std(ddof=1) if len(values) > 1 else math.nan,
                         "ci_low": low, "ci_high": high})
    return pd.DataFrame(rows)


def main_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of the main comparison: the whole training set (largest ``fraction``), trained
    centred (smallest ``train_shift``). Works on results, grids and histories alike."""
    keep = (frame["fraction"] == frame["fraction"].max()) & \
        (frame["train_shift"] == frame["train_shift"].min())
    return frame[keep].reset_index(drop=True)


def curve_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The learning curve's rows: every training fraction, trained centred."""
    return frame[frame["train_shift"] == frame["train_shift"].min()].reset_index(drop=True)


def ablation_runs(frame: pd.DataFrame) -> pd.DataFrame:
    """The augmentation ablation's rows: every training shift, on the whole training set."""
    return frame[frame["fraction"] == frame["fraction"].max()].reset_index(drop=True)


# ---------------------------------------------------------------- claims


@dataclass(frozen=True)
class Claim:
    """A claim of the write-up, tested on one metric: a pooling head against ``dense``, or,
    where ``dense`` cannot be measured (CAM), against the reference level in column
    ``reference`` (named ``reference_name`` in the report)."""

    name: str
    metric: str
    lower_is_better: bool
    unit: str
    quote: str
    reference: str | None = None
    reference_name: str = "chance"


CLAIMS: tuple[Claim, ...] = (
    Claim("fewer parameters", "params_head", True, "trainable head parameters",
          "helps removing a large number of trainable parameters from the model"),
    Claim("less overfitting", "overfit_gap", True, "train minus test accuracy",
          "Global average (max) pooling is used to minimize the overfitting"),
    Claim("more translation robust", "shift_accuracy_mean", False,
          "test accuracy averaged over the shift grid",
          "this makes the model more robust to spatial translations in the data"),
    Claim("more translation robust", "consistency", False,
          "probability two random shifts give the same class",
          "this makes the model more robust to spatial translations in the data"),
    Claim("more translation robust", "flip_rate", True,
          "probability a 1-pixel move changes the class",
          "this makes the model more robust to spatial translations in the data"),
    Claim("faster training", "seconds_per_epoch", True, "seconds per training epoch",
          "Removing them helps training faster"),
    # On centred images every object box holds the canvas centre, so a map that always peaks
    # there would score 100%: only moved objects show whether the maps follow the object.
    Claim("feature maps tied to classes", "pointing_accuracy_shifted", False,
          "share of randomly shifted test images whose class activation map peaks on the object",
          "removing the fully conneected layers forces the feature maps to be more closely "
          "related to the classification categories", reference="pointing_centre_prior_shifted",
          reference_name="centre prior"),
)


def _head_verdict(low: float, high: float) -> str:
    if math.isnan(low):
        return "untested (one seed)"
    if low > 0:
        return "supported"
    if high < 0:
        return "contradicted"
    return "no clear difference"


def claim_table(per_seed: pd.DataFrame, baseline: str = "dense", confidence: float = 0.95,
                metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """Each claim per pooling head against ``baseline`` (or the claim's reference column): the
    improvement (positive = the claim holds), its Welch-t interval, and a verdict computed
    from that interval.

    ``per_seed`` has one row per head and seed with a column per claim metric; claims whose
    metric is missing, and heads where it is undefined (``nan``, e.g. CAM of ``dense``), are
    left out, and so are claims whose metric is not in ``metrics`` (when given).
    """
    heads = [h for h in per_seed["head"].unique() if h != baseline]
    base = per_seed[per_seed["head"] == baseline]
    rows = []
    for claim in CLAIMS:
        if claim.metric not in per_seed or (claim.reference is None and base.empty) \
                or (metrics is not None and claim.metric not in metrics):
            continue
        for head in heads:
            runs = per_seed[per_seed["head"] == head]
            ours = runs[claim.metric]
            if ours.isna().any():
                continue
            theirs = runs[claim.reference] if claim.reference else base[claim.metric]
            # improvement = how much better the pooling head is, in the metric's units
            a, b = (theirs, ours) if claim.lower_is_better else (ours, theirs)
            diff, low, high = welch_interval(a, b, confidence)
            rows.append({"claim": claim.name, "head": head, "metric": claim.metric,
                         "baseline": claim.reference_name if claim.reference else baseline,
                         "head_mean": ours.mean(), "baseline_mean": theirs.mean(),
                         "improvement": diff, "ci_low": low, "ci_high": high,
                         "verdict": _head_verdict(low, high)})
    return pd.DataFrame(rows)


# Claims that depend on how a model was trained, tested again on the learning curve's smaller
# training sets and on the models trained with shifts (parameter counts and the time per epoch
# of the main runs say all there is to say about the others).
SETTING_METRICS = ("overfit_gap", "shift_accuracy_mean", "consistency", "flip_rate",
                   "pointing_accuracy_shifted")


def setting_label(fraction: float, train_shift: int, train_images: int | None = None) -> str:
    """How a group of runs was trained, in words."""
    data = "all training images" if fraction == 1 else f"{fraction:.0%} of the training images"
    if train_images is not None:
        data += f" ({train_images:,})"
    moves = "centred" if train_shift == 0 else f"random shifts up to {train_shift} px"
    return f"{data}, {moves}"


def study_claims(results: pd.DataFrame, baseline: str = "dense",
                 confidence: float = 0.95) -> pd.DataFrame:
    """``claim_table`` for the main runs (every claim), then, for ``SETTING_METRICS``, for each
    smaller training fraction of the learning curve and each larger training shift of the
    ablation; column ``setting`` says which runs a row compares."""
    full, base = results["fraction"].max(), results["train_shift"].min()
    groups = [(full, base, None)]
    groups += [(f, base, SETTING_METRICS) for f in sorted(results["fraction"].unique())
               if f != full]
    groups += [(full, s, SETTING_METRICS) for s in sorted(results["train_shift"].unique())
               if s != base]
    parts = []
    for fraction, shift, metrics in groups:
        runs = results[(results["fraction"] == fraction) & (results["train_shift"] == shift)]
        images = int(runs["train_images"].iloc[0]) if "train_images" in runs else None
        table = claim_table(runs, baseline, confidence, metrics)
        parts.append(table.assign(setting=setting_label(fraction, shift, images)))
    table = pd.concat(parts, ignore_index=True)
    order = {name: i for i, name in enumerate(dict.fromkeys(c.name for c in CLAIMS))}
    return table.sort_values("claim", key=lambda c: c.map(order), kind="stable",
                             ignore_index=True)


def overall_verdicts(claims: pd.DataFrame) -> pd.DataFrame:
    """One verdict per claim over all its rows (heads x metrics x settings): supported (every
    row), contradicted (no row supported, some contradicted), not supported (no row either
    way), or mixed (some supported, not all). ``rows`` counts the supported, contradicted and
    unclear rows. A head supports a claim when all its rows do, contradicts it when any row
    does; a setting supports it when all its rows do."""
    rows = []
    for name, group in claims.groupby("claim", sort=False):
        supported = group.verdict == "supported"
        contradicted = group.verdict == "contradicted"
        verdict = ("supported" if supported.all()
                   else "mixed" if supported.any()
                   else "contradicted" if contradicted.any() else "not supported")
        by_head = supported.groupby(group["head"], sort=False).all()
        against = contradicted.groupby(group["head"], sort=False).any()
        row = {"claim": name, "verdict": verdict,
               "rows": f"{supported.sum()} supported, {contradicted.sum()} contradicted, "
                       f"{len(group) - supported.sum() - contradicted.sum()} unclear",
               "heads supporting": ", ".join(by_head.index[by_head]) or "none",
               "heads contradicting": ", ".join(against.index[against]) or "none"}
        if "setting" in group:
            by_setting = supported.groupby(group["setting"], sort=False).all()
            row["settings where every head supports it"] = \
                "; ".join(by_setting.index[by_setting]) or "none"
        rows.append(row)
    return pd.DataFrame(rows)


# ---------------------------------------------------------------- figures


def head_palette(heads: Sequence[str]) -> dict[str, tuple[float, float, float]]:
    """One fixed colour per head, the same in every figure."""
    return dict(zip(heads, sns.color_palette("colorblind", len(heads)), strict=True))


def _t_errorbar(confidence: float):
    """A seaborn ``errorbar`` callable drawing the Student-t interval used in the tables."""
    def interval(values: pd.Series) -> tuple[float, float]:
        low, high = t_interval(values, confidence)
        mean = float(np.mean(values))
        return (mean, mean) if math.isnan(low) else (low, high)
    return interval


def plot_param_counts(counts: pd.DataFrame, heads: Sequence[str]) -> plt.Figure:
    """Bars of total and head parameters per head, log scale. ``counts``: head, params_total,
    params_head."""
    tidy = counts.melt(id_vars="head", value_vars=["params_total", "params_head"],
                       var_name="part", value_name="parameters")
    tidy["part"] = tidy["part"].map({"params_total": "whole model", "params_head": "head only"})
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.barplot(tidy, x="head", y="parameters", hue="part", order=heads, ax=ax)
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
    errorbar = _t_errorbar(confidence)
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    tidy = per_seed.melt(id_vars=["head", "seed"], value_vars=["train_accuracy", "test_accuracy"],
                         var_name="split", value_name="accuracy")
    tidy["split"] = tidy["split"].str.removesuffix("_accuracy")
    tidy["accuracy"] *= 100
    sns.barplot(tidy, x="head", y="accuracy", hue="split", order=heads, errorbar=errorbar,
                capsize=0.15, ax=left)
    low = max(0.0, tidy["accuracy"].min() - 5)
    left.set(ylim=(low, 100.5), xlabel="classifier head", ylabel="accuracy (%)",
             title="Accuracy on centred images")
    left.legend(title=None, loc="lower right")
    gap = per_seed.assign(gap=per_seed["overfit_gap"] * 100)
    sns.barplot(gap, x="head", y="gap", hue="head", order=heads, palette=head_palette(heads),
                errorbar=errorbar, capsize=0.15, ax=right, legend=False)
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
    sns.lineplot(data, x="radius", y="accuracy", hue="head", hue_order=heads, marker="o",
                 palette=head_palette(heads), errorbar=_t_errorbar(confidence), ax=ax)
    ax.set(xlabel="shift radius max(|dx|, |dy|) (pixels)", ylabel="test accuracy (%)",
           title="Accuracy when the object moves", ylim=(0, 100.5))
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.legend(title="head")
    fig.tight_layout()
    return fig


def plot_shift_heatmaps(grid: pd.DataFrame, heads: Sequence[str]) -> plt.Figure:
    """Test accuracy for every offset ``(dx, dy)``, mean over seeds, one panel per head."""
    fig, axes = plt.subplots(1, len(heads), figsize=(3.6 * len(heads) + 1, 3.6), squeeze=False)
    mean = grid.groupby(["head", "dy", "dx"], as_index=False)["accuracy"].mean()
    for ax, head in zip(axes[0], heads, strict=True):
        table = mean[mean["head"] == head].pivot(index="dy", columns="dx", values="accuracy") * 100
        step = max(1, len(table) // 8)  # at most ~9 tick labels per axis
        sns.heatmap(table, vmin=0, vmax=100, cmap="viridis", square=True, ax=ax,
                    xticklabels=step, yticklabels=step,
                    cbar=head == heads[-1], cbar_kws={"label": "test accuracy (%)"})
        ax.set(title=head, xlabel="dx (pixels, + = right)", ylabel="dy (pixels, + = down)")
    fig.suptitle("Accuracy for each shift of the object")
    fig.tight_layout()
    return fig


def plot_time_per_epoch(per_seed: pd.DataFrame, heads: Sequence[str],
                        confidence: float = 0.95) -> plt.Figure:
    """Seconds per training epoch (median epoch of each run), mean and t interval over seeds."""
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    sns.barplot(per_seed, x="head", y="seconds_per_epoch", hue="head", order=heads,
                palette=head_palette(heads), errorbar=_t_errorbar(confidence), capsize=0.15,
                ax=ax, legend=False)
    ax.set(xlabel="classifier head", ylabel="seconds per epoch", title="Training time per epoch")
    fig.tight_layout()
    return fig


def plot_training_curves(history: pd.DataFrame, heads: Sequence[str],
                         confidence: float = 0.95) -> plt.Figure:
    """Train (running) and test accuracy per epoch, band = t interval over seeds."""
    tidy = history.melt(id_vars=["head", "seed", "epoch"],
                        value_vars=["train_accuracy", "test_accuracy"], var_name="split",
                        value_name="accuracy")
    tidy["split"] = tidy["split"].str.removesuffix("_accuracy")
    tidy["accuracy"] *= 100
    fig, ax = plt.subplots(figsize=(6.5, 4))
    sns.lineplot(tidy, x="epoch", y="accuracy", hue="head", hue_order=heads, style="split",
                 palette=head_palette(heads), errorbar=_t_errorbar(confidence), ax=ax)
    ax.set(xlabel="epoch", ylabel="accuracy (%)", title="Accuracy during training",
           ylim=(max(0.0, tidy["accuracy"].min() - 5), 100.5))
    ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def plot_fraction_curve(curve: pd.DataFrame, heads: Sequence[str],
                        confidence: float = 0.95) -> plt.Figure:
    """Learning curve: test accuracy (left) and overfitting gap (right) against the number of
    training images (log scale), one line per head, band = t interval over seeds."""
    errorbar = _t_errorbar(confidence)
    data = curve.assign(test=curve["test_accuracy"] * 100, gap=curve["overfit_gap"] * 100)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, column, label, title in [
            (axes[0], "test", "test accuracy (%)", "Test accuracy vs training-set size"),
            (axes[1], "gap", "train - test accuracy (points)",
             "Overfitting gap vs training-set size")]:
        sns.lineplot(data, x="train_images", y=column, hue="head", hue_order=heads, marker="o",
                     palette=head_palette(heads), errorbar=errorbar, ax=ax)
        ax.set_xscale("log")
        sizes = sorted(data["train_images"].unique())
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
    fig, axes = plt.subplots(1, len(heads), figsize=(3.4 * len(heads) + 1, 3.8), sharey=True,
                             squeeze=False)
    for ax, head in zip(axes[0], heads, strict=True):
        sns.lineplot(data[data["head"] == head], x="radius", y="accuracy", hue="trained",
                     hue_order=styles, marker="o", errorbar=_t_errorbar(confidence), ax=ax,
                     palette=sns.color_palette("rocket", len(styles)), legend=head == heads[-1])
        ax.set(title=head, xlabel="shift radius at test (pixels)", ylabel="test accuracy (%)",
               ylim=(0, 100.5))
        ax.xaxis.get_major_locator().set_params(integer=True)
    axes[0][-1].legend(title="trained with", loc="lower left", fontsize=8)
    fig.suptitle("Training with random shifts: accuracy when the object moves")
    fig.tight_layout()
    return fig


def plot_stability(per_seed: pd.DataFrame, heads: Sequence[str],
                   confidence: float = 0.95) -> plt.Figure:
    """Consistency under two random shifts (left, higher is steadier) and the 1-pixel flip
    rate (right, lower is steadier), mean and t interval over seeds."""
    errorbar = _t_errorbar(confidence)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric, label in [(axes[0], "consistency", "same class under two random shifts (%)"),
                              (axes[1], "flip_rate", "class changes under a 1-pixel move (%)")]:
        data = per_seed.assign(value=per_seed[metric] * 100)
        sns.barplot(data, x="head", y="value", hue="head", order=heads,
                    palette=head_palette(heads), errorbar=errorbar, capsize=0.15, ax=ax,
                    legend=False)
        ax.set(xlabel="classifier head", ylabel=label)
    axes[0].set_title("Consistency (Zhang 2019)")
    axes[1].set_title("1-pixel flip rate (Azulay & Weiss 2019)")
    fig.tight_layout()
    return fig


def plot_pointing(per_seed: pd.DataFrame, heads: Sequence[str],
                  confidence: float = 0.95) -> plt.Figure:
    """Pointing accuracy of the CAM on centred and shifted images, with two references: chance
    and a map always peaking at the canvas centre, on the shifted images."""
    with_cam = [h for h in heads if per_seed.loc[per_seed["head"] == h,
                                                 "pointing_accuracy"].notna().all()]
    tidy = per_seed[per_seed["head"].isin(with_cam)].melt(
        id_vars=["head", "seed"], value_vars=["pointing_accuracy", "pointing_accuracy_shifted"],
        var_name="images", value_name="pointing")
    tidy["images"] = tidy["images"].map({"pointing_accuracy": "centred",
                                         "pointing_accuracy_shifted": "randomly shifted"})
    tidy["pointing"] *= 100
    fig, ax = plt.subplots(figsize=(max(5.5, 1.2 * len(with_cam) + 2), 4))
    sns.barplot(tidy, x="head", y="pointing", hue="images", order=with_cam,
                errorbar=_t_errorbar(confidence), capsize=0.15, ax=ax)
    for column, label, style in [("pointing_chance", "chance", "--"),
                                 ("pointing_centre_prior_shifted",
                                  "centre prior, shifted images", ":")]:
        level = per_seed[column].mean() * 100
        ax.axhline(level, color="black", linestyle=style, linewidth=1)
        ax.annotate(f"{label} {level:.0f}%", (0.01, level), xycoords=("axes fraction", "data"),
                    xytext=(0, 3), textcoords="offset points", fontsize=8)
    ax.set(xlabel="classifier head", ylabel="CAM maximum on the object (%)", ylim=(0, 100.5),
           title="Pointing accuracy of class activation maps")
    ax.legend(title=None, loc="lower right")
    fig.tight_layout()
    return fig


def plot_cam_overlays(cams: dict[str, dict[str, np.ndarray]],
                      heads: Sequence[str]) -> plt.Figure:
    """Each head's CAM of the true class over a few test images, centred and shifted; the
    object's box in white, the CAM maximum as a red cross."""
    shown = [h for h in heads if h in cams]
    count = len(cams[shown[0]]["labels"])
    fig, axes = plt.subplots(len(shown), 2 * count, figsize=(1.6 * 2 * count, 1.75 * len(shown)),
                             squeeze=False)
    for r, (row, head) in enumerate(zip(axes, shown, strict=True)):
        data = cams[head]
        dx, dy = (int(v) for v in data["shift"])
        panels = [("", data["images"], data["cams"], data["boxes"]),
                  (f" moved ({dx:+d}, {dy:+d})", data["shifted_images"], data["shifted_cams"],
                   data["shifted_boxes"])]
        for j in range(count):
            for k, (suffix, images, maps, boxes) in enumerate(panels):
                ax = row[2 * j + k]
                ax.imshow(images[j].mean(axis=0), cmap="gray")
                ax.imshow(maps[j], cmap="jet", alpha=0.45)
                top, left, bottom, right = boxes[j]
                ax.add_patch(plt.Rectangle((left - 0.5, top - 0.5), right - left, bottom - top,
                                           fill=False, edgecolor="white", linewidth=1))
                y, x = np.unravel_index(np.argmax(maps[j]), maps[j].shape)
                ax.plot(x, y, "r+", markersize=9, markeredgewidth=2)
                ax.set_xticks([])
                ax.set_yticks([])
                if j == 0 and k == 0:
                    ax.set_ylabel(head, fontsize=10)
                if r == 0:
                    ax.set_title(f"class {int(data['labels'][j])}{suffix}", fontsize=8)
    fig.suptitle("Class activation maps of the true class (red +: maximum, white: object)")
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, dpi: int = 130) -> Path:
    """Write ``fig`` as PNG atomically and close it; returns the path."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return Path(path)


# ---------------------------------------------------------------- HTML

_HTML_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>
body {{ font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px;
       margin: 2rem auto; padding: 0 1rem; line-height: 1.5; color: #222; }}
table {{ border-collapse: collapse; margin: 1rem 0; font-size: 0.9rem; }}
th, td {{ border: 1px solid #ccc; padding: 0.3rem 0.6rem; text-align: left; }}
th {{ background: #f3f3f3; }}
tr:nth-child(even) td {{ background: #fafafa; }}
img {{ max-width: 100%; height: auto; display: block; margin: 1rem 0; }}
code {{ background: #f3f3f3; padding: 0 0.2rem; }}
pre {{ background: #f6f6f6; padding: 0.6rem; overflow-x: auto; }}
</style>
</head>
<body>
{body}
</body>
</html>
"""


def markdown_to_html(text: str, base_dir: str | Path) -> str:
    """A single self-contained HTML page: Markdown rendered, local PNGs embedded as data URIs."""
    base_dir = Path(base_dir)
    body = markdown.markdown(text, extensions=["tables", "fenced_code"])

    def embed(match: re.Match) -> str:
        src = match.group(1)
        if src.startswith(("data:", "http:", "https:")):
            return match.group(0)
        encoded = base64.b64encode((base_dir / src).read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{encoded}"'

    body = re.sub(r'src="([^"]+\.png)"', embed, body)
    title_match = re.search(r"<h1>(.*?)</h1>", body)
    title = re.sub("<[^>]+>", "", title_match.group(1)) if title_match else "Report"
    return _HTML_PAGE.format(title=title, body=body)


def write_report(markdown_path: str | Path, html_path: str | Path, text: str) -> None:
    """Write the Markdown report and its self-contained HTML twin (images resolved beside it)."""
    write_text(markdown_path, text)
    write_text(html_path, markdown_to_html(text, Path(markdown_path).parent))


# ---------------------------------------------------------------- collecting results


RUN_KEYS = ["head", "fraction", "train_shift", "seed"]


def collect_results(layout, heads: Sequence[str]) -> dict[str, object]:
    """Read every head's evaluation and training outputs into tidy frames (``layout``: a
    ``gap_study.paths.Layout``).

    Returns ``results`` (one row per head x fraction x train_shift x seed: the evaluation
    metrics plus ``seconds_per_epoch``/``images_per_second``, the median epoch of that run;
    metrics measured only on the whole training set are empty for smaller fractions),
    ``grid`` (the run keys, dx, dy, radius, accuracy), ``history`` (the run keys, epoch, ...),
    ``runs`` (each head's training and evaluation run records) and ``cams`` (CAM examples per
    head that has them).
    """
    metrics, grids, histories, runs, cams = [], [], [], {}, {}
    for head in heads:
        if layout.cam_examples(head).exists():
            with np.load(layout.cam_examples(head), allow_pickle=False) as npz:
                cams[head] = dict(npz)
        metrics.append(pd.read_csv(layout.eval_metrics(head)))
        grids.append(pd.read_csv(layout.shift_grid(head)).assign(head=head))
        for path in sorted(layout.train_reports(head).glob("history/*.csv")):
            histories.append(pd.read_csv(path).assign(head=head))
        runs[head] = {"train": json.loads(layout.train_run(head).read_text()),
                      "evaluate": json.loads(layout.eval_run(head).read_text())}
    history = pd.concat(histories, ignore_index=True)
    speed = (history.groupby(RUN_KEYS, as_index=False)
             .agg(seconds_per_epoch=("epoch_seconds", "median"),
                  images_per_second=("images_per_second", "median")))
    results = pd.concat(metrics, ignore_index=True).merge(speed, on=RUN_KEYS, how="left",
                                                          validate="one_to_one")
    return {"results": results.sort_values(RUN_KEYS, key=_head_order(heads), ignore_index=True),
            "grid": pd.concat(grids, ignore_index=True), "history": history, "runs": runs,
            "cams": cams}


def _head_order(heads: Sequence[str]):
    """A ``sort_values`` key that orders the ``head`` column as in ``heads``."""
    rank = {h: i for i, h in enumerate(heads)}
    return lambda column: column.map(rank) if column.name == "head" else column


def stride_alignment(grid: pd.DataFrame, stride: int) -> pd.DataFrame:
    """Accuracy per head and seed at the shifts that move the object by whole feature-map cells
    (``dx`` and ``dy`` multiples of the backbone's ``stride``, the centre excluded) and at all
    other non-zero shifts.

    Global pooling is invariant to shifts of the *feature map*; a shift of the image by a
    non-multiple of the stride changes the map itself (the max-pools subsample), so a gap
    between the two columns shows that invariance ends at the pooling, not at the image.
    """
    moved = grid[(grid.dx != 0) | (grid.dy != 0)]
    aligned = (moved.dx % stride == 0) & (moved.dy % stride == 0)
    return (moved.assign(aligned=aligned)
            .groupby(["head", "seed", "aligned"], as_index=False)["accuracy"].mean()
            .pivot(index=["head", "seed"], columns="aligned", values="accuracy")
            .rename(columns={True: "aligned_shift_accuracy", False: "other_shift_accuracy"})
            .reset_index().rename_axis(columns=None))


def radius_table(grid: pd.DataFrame) -> pd.DataFrame:
    """Accuracy per run (head, fraction, train_shift, seed) and shift radius (mean over the
    offsets at that radius)."""
    return grid.groupby([*RUN_KEYS, "radius"], as_index=False)["accuracy"].mean()


CURVE_METRICS = ("train_images", "train_accuracy", "test_accuracy", "overfit_gap", "loss_gap")
ABLATION_METRICS = ("test_accuracy", "overfit_gap", "shift_accuracy_mean", "shift_accuracy_worst",
                    "consistency", "flip_rate", "pointing_accuracy", "pointing_accuracy_shifted")


def study_tables(results: pd.DataFrame, grid: pd.DataFrame,
                 confidence: float = 0.95) -> dict[str, pd.DataFrame]:
    """The frames the report is built from: ``main`` (the main runs' rows), ``aggregate``
    (their ``summarize`` by head), ``by_radius`` (their accuracy per shift radius),
    ``curve`` / ``curve_aggregate`` (learning-curve rows, summarized by head and fraction)
    and ``ablation`` / ``ablation_aggregate`` / ``ablation_by_radius`` (the same for the
    training shifts)."""
    main, curve, ablation = main_runs(results), curve_runs(results), ablation_runs(results)
    by_radius = radius_table(grid)
    return {
        "main": main,
        "aggregate": summarize(main, "head", SUMMARY_METRICS, confidence),
        "by_radius": main_runs(by_radius),
        "curve": curve,
        "curve_aggregate": summarize(curve, ["head", "fraction"], CURVE_METRICS, confidence),
        "ablation": ablation,
        "ablation_aggregate": summarize(ablation, ["head", "train_shift"], ABLATION_METRICS,
                                        confidence),
        "ablation_by_radius": ablation_runs(by_radius),
    }


# ---------------------------------------------------------------- the Markdown report

SUMMARY_METRICS = ("params_total", "params_head", "train_accuracy", "test_accuracy",
                   "overfit_gap", "train_loss", "test_loss", "loss_gap", "shift_accuracy_mean",
                   "shift_accuracy_worst", "consistency", "flip_rate", "pointing_accuracy",
                   "pointing_accuracy_shifted", "pointing_chance", "pointing_centre_prior",
                   "pointing_centre_prior_shifted", "seconds_per_epoch", "images_per_second")

# how each metric is shown: (scale, decimals, unit)
_FORMATS = {
    "params_total": (1, 0, ""), "params_head": (1, 0, ""),
    "train_accuracy": (100, 1, "%"), "test_accuracy": (100, 1, "%"),
    "overfit_gap": (100, 2, " pts"), "train_loss": (1, 3, ""), "test_loss": (1, 3, ""),
    "loss_gap": (1, 3, ""), "shift_accuracy_mean": (100, 1, "%"),
    "shift_accuracy_worst": (100, 1, "%"), "seconds_per_epoch": (1, 3, " s"),
    "images_per_second": (1, 0, ""),
    "aligned_shift_accuracy": (100, 1, "%"), "other_shift_accuracy": (100, 1, "%"),
    "consistency": (100, 1, "%"), "flip_rate": (100, 1, "%"), "pointing_accuracy": (100, 1, "%"),
    "train_images": (1, 0, ""),
    "pointing_accuracy_shifted": (100, 1, "%"), "pointing_chance": (100, 1, "%"),
    "pointing_centre_prior": (100, 1, "%"), "pointing_centre_prior_shifted": (100, 1, "%"),
}


def _number(value: float, metric: str, difference: bool = False) -> str:
    """``value`` in the metric's display units; a difference of percentages is in points."""
    scale, decimals, unit = _FORMATS.get(metric, (1, 3, ""))
    if difference and unit == "%":
        unit = " pts"
    return f"{value * scale:,.{decimals}f}{unit}"


def _improvement(diff: float, low: float, high: float, metric: str) -> str:
    """``diff [low, high]``; just ``diff (exact)`` when the interval has no width."""
    text = _number(diff, metric, difference=True)
    if math.isnan(low):
        return text
    if low == high:
        return f"{text} (exact)"
    return (f"{text} [{_number(low, metric, difference=True)}, "
            f"{_number(high, metric, difference=True)}]")


def format_stat(row: pd.Series | dict, metric: str) -> str:
    """``mean ± std [ci_low, ci_high]`` in the metric's display units."""
    scale, decimals, unit = _FORMATS.get(metric, (1, 3, ""))
    if math.isnan(row["mean"]):
        return "n/a"
    text = f"{row['mean'] * scale:,.{decimals}f}"
    if not math.isnan(row["std"]) and row["std"] > 0:
        text += f" ± {row['std'] * scale:,.{decimals}f}"
        text += f" [{row['ci_low'] * scale:,.{decimals}f}, {row['ci_high'] * scale:,.{decimals}f}]"
    return text + unit


def stat_table(aggregate: pd.DataFrame, metrics: Sequence[str], labels: Sequence[str],
               heads: Sequence[str]) -> pd.DataFrame:
    """A head x metric table of formatted ``mean ± std [CI]`` strings."""
    table = pd.DataFrame({"head": list(heads)})
    for metric, label in zip(metrics, labels, strict=True):
        rows = aggregate[aggregate.metric == metric].set_index("head")
        table[label] = [format_stat(rows.loc[h], metric) for h in heads]
    return table


def grouped_stat_table(aggregate: pd.DataFrame, by: Sequence[str], metrics: Sequence[str],
                       labels: Sequence[str], heads: Sequence[str]) -> pd.DataFrame:
    """Like ``stat_table`` with one row per combination of the ``by`` columns (``head``
    first, in the order of ``heads``)."""
    rows = []
    keyed = aggregate.set_index([*by, "metric"])
    groups = aggregate[list(by)].drop_duplicates()
    groups = groups.sort_values(list(by), key=_head_order(heads), kind="stable")
    for keys in groups.itertuples(index=False):
        row = dict(zip(by, keys, strict=True))
        for metric, label in zip(metrics, labels, strict=True):
            row[label] = format_stat(keyed.loc[(*keys, metric)], metric)
        rows.append(row)
    return pd.DataFrame(rows).astype(str)


def _md(frame: pd.DataFrame) -> str:
    return frame.to_markdown(index=False, disable_numparse=True)


def claim_sentences(claims: pd.DataFrame, overall: pd.DataFrame) -> str:
    """One plain paragraph per claim, quoting the write-up; every number from ``claims``."""
    by_metric = {c.metric: c for c in CLAIMS}
    paragraphs = []
    for _, row in overall.iterrows():
        rows = claims[claims.claim == row["claim"]]
        quote = by_metric[rows.metric.iloc[0]].quote
        parts = []
        for metric, group in rows.groupby("metric", sort=False):
            settings = group["setting"].nunique() if "setting" in group else 1
            measured = "; ".join(
                (f"{r.setting}: " if settings > 1 else "") +
                f"`{r['head']}` {_number(r.head_mean, metric)} vs "
                f"{_number(r.baseline_mean, metric)} ({r.baseline}), improvement "
                f"{_improvement(r.improvement, r.ci_low, r.ci_high, metric)}, {r.verdict}"
                for _, r in group.iterrows())
            parts.append(f"`{metric}` ({by_metric[metric].unit}): {measured}")
        paragraphs.append(f"- **{row['claim'].capitalize()}: {row['verdict']}.** "
                          f"(\"{quote}\") " + ". ".join(parts) + ".")
    return "\n".join(paragraphs)


def _alignment_lines(alignment: pd.DataFrame | None, stride: int, heads: Sequence[str],
                     confidence: float) -> list[str]:
    """The stride-alignment table and what it shows, or a note that the grid is too small."""
    if alignment is None:
        return [f"(The shift grid does not reach the backbone's stride of {stride} pixels, so "
                "shifts by whole feature-map cells are not separated from the others.)", ""]
    metrics = ["aligned_shift_accuracy", "other_shift_accuracy"]
    summary = summarize(alignment, "head", metrics, confidence)
    means = summary.pivot(index="head", columns="metric", values="mean")
    drops = ", ".join(f"`{h}` {means.loc[h, metrics[0]] * 100:.1f}% vs "
                      f"{means.loc[h, metrics[1]] * 100:.1f}%" for h in heads)
    return [
        f"The backbone subsamples by {stride} (its max-pools), so a shift of the image by a "
        f"multiple of {stride} pixels moves the feature map by whole cells, which global "
        "pooling ignores, while any other shift changes the map itself. Accuracy at shifts by "
        f"whole cells vs all other non-zero shifts: {drops}. Global pooling makes the head "
        "invariant to shifts of the feature map, not of the image (compare Zhang 2019 and "
        "Kayhan & van Gemert 2020 in `STUDY.md`).",
        "",
        _md(stat_table(summary, metrics, [f"shifts by multiples of {stride} px",
                                          "all other shifts"], heads)),
        "",
    ]


def _curve_lines(curve_aggregate: pd.DataFrame, heads: Sequence[str], figures: dict[str, str],
                 fractions: Sequence[float]) -> list[str]:
    if len(fractions) < 2:
        return ["## Learning curve", "", "One training fraction only (`train.fractions`): add "
                "smaller ones, e.g. `[0.1, 0.3, 1.0]`, to see how the overfitting gap grows "
                "as the training set shrinks.", ""]
    table = grouped_stat_table(
        curve_aggregate, ["head", "fraction"], ["train_images", "test_accuracy", "overfit_gap",
                                                "loss_gap"],
        ["training images", "test accuracy", "overfitting gap", "loss gap"], heads)
    table["fraction"] = [f"{float(f):.0%}" for f in table["fraction"]]
    gap = curve_aggregate[curve_aggregate.metric == "overfit_gap"]
    smallest = gap[gap.fraction == gap.fraction.min()].set_index("head")["mean"]
    largest = gap[gap.fraction == gap.fraction.max()].set_index("head")["mean"]
    change = ", ".join(f"`{h}` {largest[h] * 100:.1f} -> {smallest[h] * 100:.1f} points"
                       for h in heads)
    return [
        "## Learning curve",
        "",
        "Each head trained on nested, class-stratified fractions of the training set (the same "
        "images for every head and seed), each for the same number of optimizer steps as on "
        "the whole set, so a smaller set is seen more often, as it would be in practice. The "
        "overfitting gap is measured on the images the run trained on. From the whole training "
        f"set to the smallest fraction the gap goes {change}; the claims table tests, per "
        "fraction, whether a pooling head's gap is smaller than `dense`'s.",
        "",
        _md(table),
        "",
        f"![Learning curve]({figures['fraction_curve']})",
        "",
    ]


def _ablation_lines(ablation_aggregate: pd.DataFrame, heads: Sequence[str],
                    figures: dict[str, str], max_shift: int) -> list[str]:
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
        _md(table),
        "",
        f"![Training with random shifts]({figures['shift_training']})",
        "",
    ]


def _stability_lines(aggregate: pd.DataFrame, heads: Sequence[str],
                     figures: dict[str, str], max_shift: int) -> list[str]:
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
        _md(stat_table(aggregate, ["consistency", "flip_rate"],
                       ["consistency", "1-pixel flip rate"], heads)),
        "",
        f"Flip rates here: {flips}. Azulay & Weiss report 0.18-0.20 for ImageNet CNNs when a "
        "downscaled image moves diagonally by one pixel on a black canvas (their protocol "
        "closest to ours); ours moves along one axis (STUDY.md's four directions), not "
        "diagonally, and the data sets differ, so only the order of magnitude compares.",
        "",
        f"![Consistency and flip rate]({figures['stability']})",
        "",
    ]


def _cam_lines(aggregate: pd.DataFrame, heads: Sequence[str], figures: dict[str, str],
               per_seed: pd.DataFrame) -> list[str]:
    with_cam = [h for h in heads
                if per_seed.loc[per_seed["head"] == h, "pointing_accuracy"].notna().all()]
    lines = ["## Class activation maps", ""]
    if not with_cam:
        return [*lines, "No head in this run has class activation maps.", ""]
    without = [h for h in heads if h not in with_cam]
    lines += [
        "For a head whose classifier is linear on pooled features, the class activation map is "
        "`M_c(x, y) = sum_k w_ck f_k(x, y)` (Zhou et al. 2016), upsampled to the canvas; for "
        "`gap` and `gsp` the class score is the mean (sum) of `M_c` over positions, for `gmp` it "
        "is built from each channel's own maximum, so there `M_c` shows where the evidence lies "
        "but is not pooled into the score as it stands. Pointing accuracy: the share of test "
        "images whose map for the true class peaks inside the object's bounding box. Two "
        "references: chance (the box's share of the canvas) and the *centre prior*, a map that "
        "always peaks at the canvas centre. Every centred object's box holds the centre, so on "
        "centred images the centre prior scores 100% and pointing there is no evidence; the "
        "claim is tested on the randomly shifted images, against the centre prior on the same "
        "images.",
        "",
    ]
    if without:
        lines += [f"{', '.join(f'`{h}`' for h in without)} has no such map: its first layer "
                  "mixes every position of the feature map into each hidden unit, so no score "
                  "can be attributed to a position without a separate method (e.g. gradients).",
                  ""]
    lines += [
        _md(stat_table(aggregate, ["pointing_accuracy", "pointing_accuracy_shifted",
                                   "pointing_centre_prior_shifted", "pointing_chance"],
                       ["centred images", "randomly shifted images",
                        "centre prior, shifted images", "chance"], with_cam)),
        "",
        f"![Pointing accuracy]({figures['pointing']})",
        "",
        f"![Class activation maps]({figures['cam_overlays']})",
        "",
    ]
    return lines


def sum_vs_average(side: int, channels: int, seed: int = 0) -> dict[str, float]:
    """Global sum and average pooling of a random ``(8, channels, side, side)`` float32 map:
    the ratio sum / average (``h * w`` up to rounding) and its largest relative deviation."""
    maps = torch.randn(8, channels, side, side, generator=torch.Generator().manual_seed(seed))
    ratio = global_sum_pool(maps) / global_avg_pool(maps)
    return {"factor": float(side * side), "ratio_mean": float(ratio.mean()),
            "max_relative_deviation": float((ratio / (side * side) - 1).abs().max())}


def _sum_pooling_lines(aggregate: pd.DataFrame, heads: Sequence[str], image_size: int,
                       widths: Sequence[int], lr: float) -> list[str]:
    side = image_size // 2 ** (len(widths) - 1)
    check = sum_vs_average(side, widths[-1])
    lines = [
        "## Global sum vs global average pooling",
        "",
        f"The write-up treats GAP as a sum (\"it is treated as a sum in the paper\"). Global "
        f"sum pooling is GAP times H·W: on random {side}x{side}x{widths[-1]} maps (this "
        f"backbone's last map) sum / average = {check['ratio_mean']:.4f} = {side}·{side}, the "
        f"largest relative deviation from {side * side} being "
        f"{check['max_relative_deviation']:.1e} "
        "(float32 rounding; pinned exactly by "
        "`tests/test_pooling.py::test_gsp_is_gap_times_h_times_w`). For inference the factor "
        "is unnecessary (a linear layer can absorb it), but it scales the logits and their "
        "gradients, and so what a learning rate does.",
        "",
    ]
    if not {"gap", "gsp"} <= set(heads):
        return [*lines, "What that does to training: add both `gap` and `gsp` to `heads`.", ""]
    mean = aggregate.set_index(["head", "metric"])["mean"]
    return [*lines,
            f"With the same Adam learning rate ({lr}): `gap` reaches "
            f"{mean['gap', 'test_accuracy'] * 100:.1f}% test accuracy (train loss "
            f"{mean['gap', 'train_loss']:.3f}), `gsp` {mean['gsp', 'test_accuracy'] * 100:.1f}% "
            f"(train loss {mean['gsp', 'train_loss']:.3f}). Adam normalises each weight's step, "
            "so the factor acts mostly through the size of the logits at initialisation and "
            "the weight scale the linear layer must reach.", ""]


# Published numbers of STUDY.md that a run on the same data set can be compared with.
PUBLISHED = {
    "cifar10": [("Network in Network, Lin et al. 2014, Table 5: NIN + fully connected",
                 "test error", 0.1159),
                ("Network in Network, Lin et al. 2014, Table 5: NIN + GAP", "test error",
                 0.1041),
                ("Lin et al. 2014, conventional CNN + fully connected", "test error", 0.1756),
                ("Lin et al. 2014, conventional CNN + GAP", "test error", 0.1646)],
    "mnist": [("Network in Network, Lin et al. 2014: NIN + GAP", "test error", 0.0047)],
}


def _published_lines(dataset: str, aggregate: pd.DataFrame, heads: Sequence[str]) -> list[str]:
    lines = ["## Published numbers", ""]
    rows = PUBLISHED.get(dataset)
    if not rows:
        return [*lines, f"None of the published results in `STUDY.md` is on `{dataset}` (NIN "
                "on CIFAR-10/100, SVHN and MNIST; CAM on ILSVRC; Zhang 2019 on ImageNet; the "
                "write-up's own reference on Cats vs Dogs), so no row here is comparable; "
                "switch `data.name` to a data set they used to compare.", ""]
    errors = aggregate[aggregate.metric == "test_accuracy"].set_index("head")["mean"]
    table = pd.DataFrame(
        [{"source": source, "metric": metric, "value": f"{value:.2%}"}
         for source, metric, value in rows]
        + [{"source": f"this study: `{h}` (mean over seeds)", "metric": "test error",
            "value": f"{1 - errors[h]:.2%}"} for h in heads])
    return [*lines, "Different backbones and training budgets: compare the ordering of heads, "
            "not the absolute errors.", "", _md(table), ""]


def compose_report(*, tables: dict[str, pd.DataFrame], grid: pd.DataFrame,
                   claims: pd.DataFrame, overall: pd.DataFrame, figures: dict[str, str],
                   runs: dict[str, dict], heads: Sequence[str], confidence: float) -> str:
    """The report as Markdown, from ``study_tables``' frames, the shift ``grid`` of every run,
    the claims and the figures (paths relative to the report)."""
    per_seed, aggregate, by_radius = tables["main"], tables["aggregate"], tables["by_radius"]
    grid = main_runs(grid)
    first = runs[heads[0]]
    train, model = first["train"]["train"], first["train"]["model"]
    evaluate, env = first["evaluate"]["evaluate"], first["train"]["environment"]
    dataset = first["train"]["dataset"]
    seeds = sorted(per_seed.seed.unique().tolist())
    level = f"{confidence:.0%}"
    has_baseline = "dense" in heads and len(heads) > 1

    radius_wide = (by_radius.groupby(["head", "radius"], as_index=False)["accuracy"].mean()
                   .pivot(index="head", columns="radius", values="accuracy")
                   .reindex(list(heads)) * 100).round(1)
    radius_wide.columns = [f"r={int(c)}" for c in radius_wide.columns]
    radius_wide = radius_wide.reset_index().astype(str)

    stride = 2 ** (len(model["widths"]) - 1)
    alignment = stride_alignment(grid, stride) if stride <= evaluate["max_shift"] \
        else None

    params_table = (per_seed.groupby("head", sort=False)[["params_total", "params_head"]].first()
                    .reindex(list(heads)).reset_index())
    params_table["head share"] = [f"{h / t:.2%}" for h, t in
                                  zip(params_table.params_head, params_table.params_total,
                                      strict=True)]
    params_table["params_total"] = params_table.params_total.map("{:,}".format)
    params_table["params_head"] = params_table.params_head.map("{:,}".format)
    params_table.columns = ["head", "whole model", "head only", "head share"]

    claims_shown = claims.copy()
    claims_shown["pooling head"] = [_number(v, m) for v, m in
                                    zip(claims.head_mean, claims.metric, strict=True)]
    claims_shown["baseline value"] = [_number(v, m) for v, m in
                                      zip(claims.baseline_mean, claims.metric, strict=True)]
    claims_shown[f"improvement [{level} CI]"] = [
        _improvement(d, lo, hi, m)
        for d, lo, hi, m in zip(claims.improvement, claims.ci_low, claims.ci_high, claims.metric,
                                strict=True)]
    claims_shown = claims_shown[["claim", "setting", "metric", "head", "pooling head",
                                 "baseline", "baseline value", f"improvement [{level} CI]",
                                 "verdict"]]

    lines = [
        "# Global pooling vs a dense classifier head: results",
        "",
        f"Data set **{dataset['name']}**: {dataset['train_images']:,} training and "
        f"{dataset['test_images']:,} test images of {dataset['image_size']}x"
        f"{dataset['image_size']} pixels ({dataset['in_channels']} channel(s)), "
        f"{dataset['num_classes']} classes, the object centred on a zero background. "
        f"Backbone: conv3x3-BN-ReLU blocks of widths {model['widths']} with 2x2 max-pooling "
        f"between blocks; `dense` head hidden size {model['dense_hidden']}. "
        f"Heads: {', '.join(f'`{h}`' for h in heads)}. Each head is trained with seeds "
        f"{seeds} for {train['epochs']} epochs (Adam, learning rate {train['lr']}, batch "
        f"{train['batch_size']}, weight decay {train['weight_decay']}) on the whole training "
        "set with the object centred (the *main runs*, which every section compares unless it "
        f"says otherwise); for the learning curve also on the fractions {train['fractions']} "
        "of the training set (the same number of optimizer steps), and for the augmentation "
        f"ablation with random shifts of up to {train['shift']} pixels. "
        f"Every number is the mean over the {len(seeds)} seeds, with ± the standard deviation "
        f"and [the {level} Student-t confidence interval] (not clipped to the metric's range, so "
        "an accuracy interval can pass 100% when seeds disagree); every run's values are in "
        "`results.csv` (one row per head, fraction, training shift and seed), the main runs' in "
        "`summary.csv`. Metric definitions: `STUDY.md` (\"Metrics\").",
        "",
        "## What the numbers say about the write-up's claims",
        "",
    ]
    if has_baseline:
        lines += [
            f"Each pooling head is compared with `dense`; for the class-activation-map claim, "
            f"where `dense` has no map, with a map that always peaks at the canvas centre, on "
            f"randomly shifted images (see \"Class activation maps\"). A claim holds for a head "
            f"when the "
            f"{level} Welch-t interval of the improvement lies above zero; \"no clear "
            f"difference\" means the interval contains zero (not that the heads are equal); "
            f"\"contradicted\" means the pooling head is reliably worse. Claims that depend on "
            "training are tested again on the smaller training sets of the learning curve and "
            "on the models trained with random shifts (column `setting`). A claim is supported "
            "when it holds for every pooling head in every setting and metric, contradicted "
            "when it holds in none and some row is contradicted, not supported when no row "
            "differs clearly, and mixed otherwise; column `rows` counts the comparisons behind "
            "each verdict. The intervals are per comparison, not corrected for the number of "
            "comparisons: one supported row among many is weak evidence.",
            "",
            _md(overall),
            "",
            claim_sentences(claims, overall),
            "",
            _md(claims_shown),
            "",
        ]
    else:
        lines += ["The run has no `dense` baseline (or no pooling head), so the claims are "
                  "not tested here; add `dense` and a pooling head to `heads`.", ""]
    lines += [
        "## Parameters",
        "",
        _md(params_table),
        "",
        f"![Parameters per head]({figures['params']})",
        "",
        "## Accuracy and overfitting",
        "",
        "Train and test accuracy are measured on centred images with the model in eval mode; "
        "the overfitting gap is train minus test accuracy, the loss gap test minus train "
        "cross-entropy.",
        "",
        _md(stat_table(aggregate, ["train_accuracy", "test_accuracy", "overfit_gap", "loss_gap"],
                       ["train accuracy", "test accuracy", "overfitting gap", "loss gap"],
                       heads)),
        "",
        f"![Accuracy and overfitting gap]({figures['accuracy']})",
        "",
        f"![Accuracy during training]({figures['training_curves']})",
        "",
        *_curve_lines(tables["curve_aggregate"], heads, figures, train["fractions"]),
        "## Translation robustness",
        "",
        f"Test accuracy with the object moved by every integer offset (dx, dy) in "
        f"[-{evaluate['max_shift']}, {evaluate['max_shift']}]² on the canvas (zero fill), "
        "summarised by the shift radius max(|dx|, |dy|) (mean over seeds, %), and over the "
        "whole grid (mean and worst offset).",
        "",
        _md(radius_wide),
        "",
        _md(stat_table(aggregate, ["shift_accuracy_mean", "shift_accuracy_worst"],
                       ["mean over the grid", "worst offset"], heads)),
        "",
        f"![Accuracy vs shift radius]({figures['shift_radius']})",
        "",
        *_alignment_lines(alignment, stride, heads, confidence),
        *_stability_lines(aggregate, heads, figures, evaluate["max_shift"]),
        f"![Accuracy per offset]({figures['shift_heatmaps']})",
        "",
        *_ablation_lines(tables["ablation_aggregate"], heads, figures, evaluate["max_shift"]),
        *_cam_lines(aggregate, heads, figures, per_seed),
        *_sum_pooling_lines(aggregate, heads, dataset["image_size"], model["widths"],
                            train["lr"]),
        "## Training speed",
        "",
        f"Wall time of the training pass of one epoch (median over epochs, per run), on "
        f"{env['device']} ({env['device_name']}, {env['torch_threads']} threads). Timings "
        "vary from run to run and are not part of the bit-reproducible metrics.",
        "",
        _md(stat_table(aggregate, ["seconds_per_epoch", "images_per_second"],
                       ["seconds per epoch", "training images per second"], heads)),
        "",
        f"![Time per epoch]({figures['time']})",
        "",
        *_published_lines(dataset["name"], aggregate, heads),
        "## Provenance",
        "",
        f"- torch {env['torch']}, numpy {env['numpy']}, Python {env['python']} on "
        f"{env['platform']}; git commit `{env['git_commit']}`.",
        f"- Training params: `{train}`; model params: `{model}`; evaluation params: "
        f"`{evaluate}`.",
        "- Inputs: `reports/eval/<head>/` (metrics.csv, shift_grid.csv), "
        "`reports/train/<head>/` (per-epoch history of every run, run.json); executed "
        "notebooks in `reports/notebooks/`. A run's files are named after its fraction, "
        "training shift and seed, e.g. `fraction_1-shift_0-seed_0`.",
        "",
    ]
    return "\n".join(lines)


HEADLINE_METRICS = ("params_total", "params_head", "train_accuracy", "test_accuracy",
                    "overfit_gap", "loss_gap", "shift_accuracy_mean", "shift_accuracy_worst",
                    "consistency", "flip_rate", "pointing_accuracy", "pointing_accuracy_shifted")


def headline_metrics(results: pd.DataFrame) -> dict[str, dict[str, object]]:
    """Per head, the mean over seeds of each deterministic metric of the main runs (timings
    excluded, so the file is byte-identical between runs with the same params), the
    overfitting gap per training fraction and the shift metrics per training shift, for
    ``dvc metrics``."""
    out: dict[str, dict[str, object]] = {}
    main, curve, ablation = main_runs(results), curve_runs(results), ablation_runs(results)

    def mean(group: pd.DataFrame, metric: str) -> float | None:
        # a metric a head does not have (CAM of dense) is null, not NaN: JSON has no NaN
        if metric not in group or group[metric].isna().all():
            return None
        return float(group[metric].mean())

    for head, group in main.groupby("head", sort=False):
        out[head] = {m: mean(group, m) for m in HEADLINE_METRICS if m in group}
        out[head].update({m: int(group[m].max()) for m in HEADLINE_METRICS
                          if m.startswith("params_")})  # counts: the same for every seed
        out[head]["seeds"] = len(group)
        out[head]["overfit_gap_by_fraction"] = {
            f"{fraction:g}": mean(runs, "overfit_gap")
            for fraction, runs in curve[curve["head"] == head].groupby("fraction")}
        out[head]["by_train_shift"] = {
            f"{shift}": {m: mean(runs, m) for m in ("shift_accuracy_mean", "consistency",
                                                     "flip_rate")}
            for shift, runs in ablation[ablation["head"] == head].groupby("train_shift")}
    return out
