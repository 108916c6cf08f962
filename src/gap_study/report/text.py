"""The Markdown report: one function per section, each a list of lines, and ``compose_report``,
which puts them in order. The sections on what pooling does with the feature map
(translation robustness, class activation maps, sum pooling) are in ``pooling_text``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import pandas as pd

from gap_study.nets.architecture import FACTORIAL, FLATTEN_HEAD_NAMES, total_stride
from gap_study.pipeline.params import ReportParams
from gap_study.report.formatting import (
    format_number,
    format_stat,
    grouped_stat_table,
    markdown_table,
    stat_table,
)
from gap_study.report.mechanism import mechanism_published_rows, mechanism_section
from gap_study.report.pooling_text import (
    ablation_section,
    cam_section,
    sum_pooling_section,
    translation_section,
)
from gap_study.report.stats import summarize
from gap_study.report.tables import (
    CollectedResults,
    RunRecords,
    StudyTables,
    chosen_at_grid_edge,
    main_runs,
)
from gap_study.report.verdict_text import claims_section, summary_section

__all__ = [
    "PUBLISHED",
    "StudySetup",
    "accuracy_section",
    "compose_report",
    "curve_section",
    "factorial_section",
    "header_section",
    "learning_rate_section",
    "parameters_section",
    "provenance_section",
    "published_section",
    "speed_section",
    "study_setup",
]

# Published numbers (``docs/study.md``, "Published numbers") that a run on the same data set
# can be compared with.
PUBLISHED = {
    "cifar10": [("Network in Network, Lin et al. 2014, Table 5: NIN + fully connected",
                 "test error", 0.1159),
                ("Network in Network, Lin et al. 2014, Table 5: NIN + GAP", "test error",
                 0.1041),
                ("Lin et al. 2014, conventional CNN + fully connected", "test error", 0.1756),
                ("Lin et al. 2014, conventional CNN + GAP", "test error", 0.1646)],
    "mnist": [("Network in Network, Lin et al. 2014: NIN + GAP", "test error", 0.0047)],
}


class StudySetup(NamedTuple):
    """How the study ran, from the train and evaluate stages' run records."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    train: dict[str, Any]
    evaluate: dict[str, Any]
    environment: dict[str, Any]
    feature_map: dict[str, Any]  # shape, stride, sum_over_average (evaluate stage)
    compute: dict[str, Any]  # the train stage's compute section
    workers: dict[str, dict[str, Any]]  # where each training run computed, by "head/run"


def study_setup(records: RunRecords) -> StudySetup:
    """The ``StudySetup`` of the ``{"train": ..., "evaluate": ...}`` run records."""
    train, evaluate = records["train"], records["evaluate"]
    # the evaluate stage's data set: the train stage never loads the test split
    return StudySetup(dataset=evaluate["dataset"], model=train["model"], train=train["train"],
                      evaluate=evaluate["evaluate"], environment=train["environment"],
                      feature_map=evaluate["feature_map"], compute=train["compute"],
                      workers=train["runs"])


def _where_runs_computed(workers: Mapping[str, Mapping[str, Any]]) -> str:
    """``host (CPU, instruction set, threads): n runs`` for each kind of worker."""
    kinds = Counter((w["host"], w["cpu"], w["cpu_capability"], w["torch_threads"])
                    for w in workers.values())
    return "; ".join(f"{host} ({cpu}, {capability}, {threads} thread(s)): {count} runs"
                     for (host, cpu, capability, threads), count in sorted(kinds.items()))


def _ablation_phrase(shifts: Sequence[int]) -> str:
    """How the header names the augmentation ablation: its shifts, or that it did not run."""
    if len(shifts) < 2:
        return " (no augmentation ablation: `train.shift` has one value)"
    return f", and for the augmentation ablation with random shifts of up to {list(shifts)} pixels"


def _downsampling_phrase(model: dict) -> str:
    pooling = ("2x2 max-pooling" if model["downsample"] == "max" else
               f"anti-aliased max-pooling (2x2 max at stride 1, then a {model['blur_size']}x"
               f"{model['blur_size']} binomial filter at stride 2)")
    padding = {"zeros": "zero"}.get(model["padding"], model["padding"])
    return f"{pooling} between blocks and {padding} padding"


def header_section(setup: StudySetup, heads: Sequence[str], seeds: Sequence[int],
                   level: str) -> list[str]:
    """The title and what was run: data, backbone, heads, seeds, training, how to read numbers."""
    dataset, model, train = setup.dataset, setup.model, setup.train
    pairs = dataset.get("two_object_canvases", 0)  # absent from records before they existed
    return [
        "# Global pooling vs a dense classifier head: results",
        "",
        f"Data set **{dataset['name']}**: {dataset['train_images']:,} training and "
        f"{dataset['test_images']:,} test images of {dataset['image_size']}x"
        f"{dataset['image_size']} pixels ({dataset['in_channels']} channel(s)), "
        f"{dataset['num_classes']} classes, the object centred on a zero background"
        f"{f'; {pairs:,} two-object canvases made of test objects' if pairs else ''}. "
        f"Backbone: conv3x3-BN-ReLU blocks of widths {model['widths']} with "
        f"{_downsampling_phrase(model)}; `dense` head hidden size {model['dense_hidden']}. "
        f"Heads: {', '.join(f'`{h}`' for h in heads)}. Each head is trained with seeds "
        f"{list(seeds)} for {train['epochs']} epochs (Adam with its own learning rate, chosen "
        f"on the validation split: see \"Learning rates\"; {train['schedule']} schedule, "
        f"batch {train['batch_size']}{', full batches only' if train['drop_last'] else ''}, "
        f"weight decay {train['weight_decay']}) on the whole training set with the object "
        "centred (the *main runs*, which every section compares unless it says otherwise); "
        f"for the learning curve also on the fractions {train['fractions']} of the training "
        f"set (the same number of optimizer steps){_ablation_phrase(train['shift'])}. "
        f"{dataset['validation_images']:,} "
        "images held out of the training set make every choice; the test set makes none. "
        f"Every number is the mean over the {len(seeds)} seeds, with ± the standard deviation "
        f"and [the {level} Student-t confidence interval] (not clipped to the metric's range, so "
        "an accuracy interval can pass 100% when seeds disagree); every run's values are in "
        "`results.csv` (part `main`: one row per head, fraction, training shift and seed; part "
        "`mechanism`: the mechanism experiment's runs), the main runs' in "
        "`summary.csv`. Metric definitions: `docs/study.md` (\"Metrics\").",
        "",
    ]


def parameters_section(per_seed: pd.DataFrame, heads: Sequence[str],
                       figures: Mapping[str, str]) -> list[str]:
    """Section "Parameters": whole model, head and the head's share, per head."""
    table = (per_seed.groupby("head", sort=False)[["params_total", "params_head"]].first()
             .reindex(list(heads)).reset_index())
    table["head share"] = [f"{h / t:.2%}" for h, t in
                           zip(table.params_head, table.params_total, strict=True)]
    table["params_total"] = table.params_total.map("{:,}".format)
    table["params_head"] = table.params_head.map("{:,}".format)
    table.columns = ["head", "whole model", "head only", "head share"]
    return ["## Parameters", "", markdown_table(table), "",
            f"![Parameters per head]({figures['params']})", ""]


def accuracy_section(aggregate: pd.DataFrame, heads: Sequence[str],
                     figures: Mapping[str, str]) -> list[str]:
    """Section "Accuracy and overfitting" of the main runs."""
    return [
        "## Accuracy and overfitting",
        "",
        "Train and test accuracy are measured on centred images with the model in eval mode; "
        "the overfitting gap is train minus test accuracy, the loss gap test minus train "
        "cross-entropy.",
        "",
        markdown_table(stat_table(
            aggregate, ["train_accuracy", "test_accuracy", "overfit_gap", "loss_gap"],
            ["train accuracy", "test accuracy", "overfitting gap", "loss gap"], heads)),
        "",
        f"![Accuracy and overfitting gap]({figures['accuracy']})",
        "",
        f"![Accuracy during training]({figures['training_curves']})",
        "",
    ]


def curve_section(curve_aggregate: pd.DataFrame, heads: Sequence[str],
                  figures: Mapping[str, str], fractions: Sequence[float]) -> list[str]:
    """Section "Learning curve", or how to add training fractions."""
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
        f"set to the smallest fraction the gap goes {change}. The claims table judges "
        "overfitting by test accuracy and test loss at each fraction; the gap is secondary, as "
        "a head that fits its training set less also has a smaller gap.",
        "",
        markdown_table(table),
        "",
        f"![Learning curve]({figures['fraction_curve']})",
        "",
    ]


def speed_section(aggregate: pd.DataFrame, step_times: pd.DataFrame,
                  speed_run: Mapping[str, Any], heads: Sequence[str],
                  figures: Mapping[str, str], confidence: float) -> list[str]:
    """Section "Training speed": the speed stage's step timing (what the claim is judged on),
    then the training runs' own epoch times, which do not compare heads."""
    env, rounds = speed_run["environment"], step_times["round"].nunique()
    summary = summarize(step_times, "head", ["seconds_per_step"], confidence)
    best = step_times.groupby("head")["seconds_per_step"].min()
    table = stat_table(summary, ["seconds_per_step"], ["per step, over rounds"], heads)
    table["best round"] = [format_number(best[h], "seconds_per_step") for h in heads]
    if "dense" in best:
        table["dense / head (best rounds)"] = [f"{best['dense'] / best[h]:.2f}x" for h in heads]
    return [
        "## Training speed",
        "",
        f"One training step of every head (batch {speed_run['batch_size']}, the study's input, "
        f"fused Adam), timed by the speed stage in one process with the heads taking turns, "
        f"{rounds} rounds, {speed_run['threads_per_run']} torch thread(s) as every training "
        f"run has, on {env['device']} ({env['device_name']}): per head the mean over rounds "
        "of each round's median, and the best round. The claim compares the rounds.",
        "",
        markdown_table(table),
        "",
        f"![Training step time]({figures['time']})",
        "",
        "The training runs' own epoch times (median epoch of each run) are secondary: runs "
        "train side by side on parallel workers and slow each other down, so these numbers "
        "describe the pipeline, not the heads. Timings are not part of the bit-reproducible "
        "metrics.",
        "",
        markdown_table(stat_table(aggregate, ["seconds_per_epoch", "images_per_second"],
                                  ["seconds per epoch", "training images per second"], heads)),
        "",
    ]


def published_section(dataset: str, aggregate: pd.DataFrame, heads: Sequence[str],
                      mechanism_rows: Sequence[Mapping[str, str]] = ()) -> list[str]:
    """Section "Published numbers": ``PUBLISHED`` on this data set next to this study's, and
    the mechanism experiment beside the shift-robustness papers (``mechanism_rows``)."""
    lines = ["## Published numbers", ""]
    rows = PUBLISHED.get(dataset)
    if not rows:
        lines += [f"None of the published test errors in `docs/study.md` is on `{dataset}` "
                  "(NIN on CIFAR-10/100, SVHN and MNIST; CAM on ILSVRC; the write-up's own "
                  "reference on Cats vs Dogs), so no error rate here is comparable; switch "
                  "`data.name` to a data set they used to compare.", ""]
    else:
        errors = aggregate[aggregate.metric == "test_accuracy"].set_index("head")["mean"]
        table = pd.DataFrame(
            [{"source": source, "metric": metric, "value": f"{value:.2%}"}
             for source, metric, value in rows]
            + [{"source": f"this study: `{h}` (mean over seeds)", "metric": "test error",
                "value": f"{1 - errors[h]:.2%}"} for h in heads])
        lines += ["Different backbones and training budgets: compare the ordering of heads, "
                  "not the absolute errors.", "", markdown_table(table), ""]
    if mechanism_rows:
        lines += ["Shift robustness beside the mechanism experiment (section \"Why global "
                  "pooling is not shift invariant\"). The papers shift natural ImageNet images "
                  "(Zhang by cropping, up to 31 pixels per axis, pretrained networks; Azulay & "
                  "Weiss one diagonal pixel on a black canvas), while this study moves one small "
                  "object on an empty canvas over every offset of the grid and trains small "
                  "networks from scratch; exact consistency averages over every pair of "
                  "offsets instead of sampling one, and the all-pairs flip rate counts "
                  "horizontal, vertical and diagonal neighbours. Compare directions and rough "
                  "sizes.", "", markdown_table(pd.DataFrame(list(mechanism_rows))), ""]
    return lines


def provenance_section(setup: StudySetup) -> list[str]:
    """Section "Provenance": versions, commit, params and where the inputs are."""
    env = setup.environment
    return [
        "## Provenance",
        "",
        f"- torch {env['torch']}, numpy {env['numpy']}, Python {env['python']} on "
        f"{env['platform']}; git commit `{env['git_commit']}`.",
        f"- Training params: `{setup.train}`; model params: `{setup.model}`; evaluation params: "
        f"`{setup.evaluate}`; compute: `{setup.compute}`.",
        f"- Training runs computed on {_where_runs_computed(setup.workers)}.",
        "- Inputs: `reports/eval/<head>/` (metrics.csv, shift_grid.csv), "
        "`reports/train/history/<head>/` (per-epoch history of every run), "
        "`reports/speed/step_times.csv`, and each stage's `run.json` (where every run "
        "computed); executed "
        "notebooks in `reports/notebooks/`. A run's files are named after its fraction, "
        "training shift and seed, e.g. `fraction_1-shift_0-seed_0`.",
        "",
    ]


def learning_rate_section(tuning: pd.DataFrame, heads: Sequence[str],
                          figures: Mapping[str, str]) -> list[str]:
    """Section "Learning rates": the tune stage's validation accuracy per rate, the choice."""
    table = (tuning.assign(val=tuning["val_accuracy"].map(lambda v: f"{v * 100:.1f}%")
                           + tuning["chosen"].map(lambda c: " (chosen)" if c else ""))
             .pivot(index="head", columns="lr", values="val").reindex(list(heads)))
    table.columns = [f"lr {c:g}" for c in table.columns]
    return ["## Learning rates", "",
            "Each head's learning rate is the one whose run (the whole training set, centred, "
            "a seed not among the reported ones) ends with the best validation accuracy: one "
            "rate for every head would favour the heads it happens to suit.", "",
            markdown_table(table.reset_index()), "", *_edge_note(tuning),
            f"![Learning rates]({figures['tuning']})", ""]


def _edge_note(tuning: pd.DataFrame) -> list[str]:
    """A paragraph naming the heads whose chosen rate is an end of the grid, if any."""
    edges = chosen_at_grid_edge(tuning)
    if not edges:
        return ["Every chosen rate lies inside the grid.", ""]
    return ["At an end of the grid, so the best rate may lie beyond it (widen "
            "`tune.learning_rates` to check): "
            + "; ".join(f"`{head}` (the {end})" for head, end in edges.items()) + ".", ""]


def factorial_section(aggregate: pd.DataFrame, heads: Sequence[str]) -> list[str]:
    """Section "Spatial pooling or head capacity": the {flatten, global average} x {no hidden
    layer, hidden layer} table of test accuracy, when its four heads ran."""
    cells = {key: head for key, head in FACTORIAL.items() if head in heads}
    if len(cells) < len(FACTORIAL):
        missing = [h for h in FACTORIAL.values() if h not in heads]
        return ["## Spatial pooling or head capacity", "",
                f"Add {', '.join(f'`{h}`' for h in missing)} to `heads` to separate the "
                "effect of pooling from that of the hidden layer.", ""]
    rows = aggregate[aggregate.metric.isin(["test_accuracy", "params_head"])] \
        .set_index(["head", "metric"])
    table = pd.DataFrame([{"map": pooling, **{
        ("hidden layer" if hidden else "no hidden layer"):
        f"`{head}`: {format_stat(rows.loc[(head, 'test_accuracy')], 'test_accuracy')}, "
        f"{int(rows.loc[(head, 'params_head'), 'mean']):,} parameters"
        for (p, hidden), head in cells.items() if p == pooling}}
        for pooling in ("flatten", "global average")])
    return ["## Spatial pooling or head capacity", "",
            "Test accuracy (main runs) of the four heads that cross the map's treatment "
            "(flatten or global average) with the head's capacity (a hidden layer or not): "
            "down a column, pooling alone changes; along a row, the hidden layer alone.", "",
            markdown_table(table), ""]


def compose_report(*, collected: CollectedResults, tables: StudyTables,
                   comparisons: pd.DataFrame, verdicts: pd.DataFrame,
                   figures: Mapping[str, str], heads: Sequence[str],
                   settings: ReportParams) -> str:
    """The report as Markdown, from everything the stages wrote (``collected``), the tables
    and comparisons made from it, and the figures (paths relative to the report)."""
    setup = study_setup(collected.records)
    seeds = sorted(tables.main.seed.unique().tolist())
    level, max_shift = f"{settings.confidence:.0%}", setup.evaluate["max_shift"]
    learning_rates = collected.records["train"]["learning_rates"]
    mechanism = collected.records["mechanism"]["mechanism"]
    mechanism_heads = [h for h in heads if h in mechanism["heads"]]
    pooled = [h for h in mechanism_heads if h not in FLATTEN_HEAD_NAMES]
    sections = [
        header_section(setup, heads, seeds, level),
        summary_section(comparisons, verdicts),
        claims_section(comparisons, verdicts, heads, figures, settings.alpha, level),
        learning_rate_section(collected.tuning, heads, figures),
        parameters_section(tables.main, heads, figures),
        factorial_section(tables.aggregate, heads),
        accuracy_section(tables.aggregate, heads, figures),
        curve_section(tables.curve_aggregate, heads, figures, setup.train["fractions"]),
        translation_section(tables, main_runs(collected.grid), heads, figures, max_shift,
                            total_stride(setup.model["widths"]), settings.confidence),
        ablation_section(tables.ablation_aggregate, heads, figures, max_shift),
        mechanism_section(collected.mechanism, collected.mechanism_grid,
                          total_stride(setup.model["widths"]), mechanism, setup.model,
                          mechanism_heads, pooled, figures, settings.confidence),
        cam_section(tables.aggregate, heads, figures, tables.main),
        sum_pooling_section(tables.aggregate, heads, setup.feature_map, learning_rates,
                            settings.margins.accuracy),
        speed_section(tables.aggregate, collected.step_times, collected.speed_run, heads,
                      figures, settings.confidence),
        published_section(setup.dataset["name"], tables.aggregate, heads,
                          mechanism_published_rows(collected.mechanism, mechanism,
                                                   setup.model["blur_size"], pooled)),
        provenance_section(setup),
    ]
    return "\n".join(line for section in sections for line in section)
