"""The report's facts: one typed object (``ReportFacts``) holding every number, verdict word,
table and figure path the report states, computed from the stages' outputs. The prose is in
``templates/report.md.j2`` (rendered by ``gap_study.report.render``); nothing here assembles
a sentence. The claims' verdicts are in ``verdict_facts``, the translation, map and
sum-pooling facts in ``pooling_facts``, the mechanism experiment's in ``mechanism``."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from gap_study.nets.architecture import FACTORIAL, FLATTEN_HEAD_NAMES, total_stride
from gap_study.pipeline.params import ReportParams
from gap_study.report.formatting import (
    format_number,
    format_stat,
    grouped_stat_table,
    stat_table,
)
from gap_study.report.mechanism import MechanismFacts, mechanism_facts, published_rows
from gap_study.report.pooling_facts import (
    Ablation,
    CamFacts,
    SumPooling,
    Translation,
    ablation_facts,
    cam_facts,
    sum_pooling_facts,
    translation_facts,
)
from gap_study.report.protocol import PROTOCOL_VERSION, heads_under_test
from gap_study.report.scope import Scope, scope_facts
from gap_study.report.stats import summarize
from gap_study.report.tables import (
    CollectedResults,
    StudyTables,
    main_runs,
)
from gap_study.report.tuning import TuneFlags, chosen_rates, tune_flags
from gap_study.report.verdict_facts import (
    ClaimFacts,
    Secondary,
    claim_facts,
    comparison_table,
    secondary_facts,
)

__all__ = ["PUBLISHED", "ReportFacts", "build_facts"]

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
def _parameters(per_seed: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame:
    table = (per_seed.groupby("head", sort=False)[["params_total", "params_head"]].first()
             .reindex(list(heads)).reset_index())
    table["head share"] = [f"{h / t:.2%}" for h, t in
                           zip(table.params_head, table.params_total, strict=True)]
    table["params_total"] = table.params_total.map("{:,}".format)
    table["params_head"] = table.params_head.map("{:,}".format)
    table.columns = ["head", "whole model", "head only", "head share"]
    return table


def _factorial(aggregate: pd.DataFrame, heads: Sequence[str]) -> pd.DataFrame | None:
    """{flatten, global average} x {no hidden layer, hidden layer}: test accuracy and head
    parameters; ``None`` unless all four heads ran."""
    if not set(FACTORIAL.values()) <= set(heads):
        return None
    rows = aggregate[aggregate.metric.isin(["test_accuracy", "params_head"])] \
        .set_index(["head", "metric"])
    return pd.DataFrame([{"map": pooling, **{
        ("hidden layer" if hidden else "no hidden layer"):
        f"`{head}`: {format_stat(rows.loc[(head, 'test_accuracy')], 'test_accuracy')}, "
        f"{int(rows.loc[(head, 'params_head'), 'mean']):,} parameters"
        for (p, hidden), head in FACTORIAL.items() if p == pooling}}
        for pooling in ("flatten", "global average")])


@dataclass(frozen=True)
class Curve:
    """The learning curve: each head's overfitting gap on the whole set and the smallest
    fraction, and the table (a CSV)."""

    gaps: dict[str, tuple[float, float]]
    table: pd.DataFrame


def _curve(curve_aggregate: pd.DataFrame, heads: Sequence[str]) -> Curve | None:
    if curve_aggregate["fraction"].nunique() < 2:
        return None
    table = grouped_stat_table(
        curve_aggregate, ["head", "fraction"], ["train_images", "test_accuracy", "overfit_gap",
                                                "loss_gap"],
        ["training images", "test accuracy", "overfitting gap", "loss gap"], heads)
    table["fraction"] = [f"{float(f):.0%}" for f in table["fraction"]]
    gap = curve_aggregate[curve_aggregate.metric == "overfit_gap"]
    smallest = gap[gap.fraction == gap.fraction.min()].set_index("head")["mean"]
    largest = gap[gap.fraction == gap.fraction.max()].set_index("head")["mean"]
    return Curve({h: (float(largest[h]), float(smallest[h])) for h in heads}, table)


@dataclass(frozen=True)
class Speed:
    """The speed stage's steps, and what the time to the target is made of: ``to_target``
    (epochs to the target and the time, per head), ``more_epochs`` (each tested head that
    needs more epochs than ``dense``, with both means) and ``missed`` (each head with runs
    that never reached the target: head, missed, runs)."""

    rounds: int
    run: dict[str, Any]  # the speed stage's run record
    table: pd.DataFrame
    epochs: pd.DataFrame  # the training runs' epoch times (a CSV)
    to_target: pd.DataFrame | None = None
    more_epochs: list[tuple[str, float, float]] = field(default_factory=list)
    missed: list[tuple[str, int, int]] = field(default_factory=list)


def _speed(tables: StudyTables, collected: CollectedResults, heads: Sequence[str],
           confidence: float) -> Speed:
    aggregate, step_times = tables.aggregate, collected.step_times
    summary = summarize(step_times, "head", ["seconds_per_step"], confidence)
    best = step_times.groupby("head")["seconds_per_step"].min()
    table = stat_table(summary, ["seconds_per_step"], ["per step, over rounds"], heads)
    table["best round"] = [format_number(best[h], "seconds_per_step") for h in heads]
    if "dense" in best:
        table["dense / head (best rounds)"] = [f"{best['dense'] / best[h]:.2f}x" for h in heads]
    epochs = aggregate[aggregate.metric == "epochs_to_target"].set_index("head")["mean"]
    return Speed(int(step_times["round"].nunique()), dict(collected.speed_run), table,
                 stat_table(aggregate, ["seconds_per_epoch", "images_per_second"],
                            ["seconds per epoch", "training images per second"], heads),
                 stat_table(aggregate, ["epochs_to_target", "time_to_target"],
                            ["epochs to the target", "time to the target"], heads)
                 if len(epochs) else None, _more_epochs(epochs, heads),
                 _missed(tables.main, heads))


def _more_epochs(epochs: pd.Series, heads: Sequence[str]) -> list[tuple[str, float, float]]:
    """``(head, its mean epochs to the target, dense's)`` for each tested head whose mean over
    seeds is above ``dense``'s (means, not a test)."""
    if "dense" not in epochs:
        return []
    return [(h, float(epochs[h]), float(epochs["dense"])) for h in heads_under_test(heads)
            if h in epochs and epochs[h] > epochs["dense"]]


def _missed(main: pd.DataFrame, heads: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(head, runs that never reached the target, runs)`` for each head with such runs:
    the per-head time to the target leaves them out (its test counts them at a lower bound)."""
    if "epochs_to_target" not in main:
        return []
    counts = main.groupby("head")["epochs_to_target"].agg(["size", "count"])
    return [(h, int(counts.at[h, "size"] - counts.at[h, "count"]), int(counts.at[h, "size"]))
            for h in heads if h in counts.index and counts.at[h, "count"] < counts.at[h, "size"]]


def _published(dataset: str, aggregate: pd.DataFrame, heads: Sequence[str],
               mechanism_rows: list[dict[str, str]]) -> tuple[dict[str, float], pd.DataFrame]:
    """This study's test error per head when a published error is on ``dataset``, and every
    published number beside this study's (a CSV)."""
    rows = PUBLISHED.get(dataset, [])
    errors = 1 - aggregate[aggregate.metric == "test_accuracy"].set_index("head")["mean"]
    ours = {h: float(errors[h]) for h in heads} if rows else {}
    table = pd.DataFrame(
        [{"source": s, "metric": m, "value": f"{v:.2%}"} for s, m, v in rows]
        + [{"source": f"this study: {h} (mean over seeds)", "metric": "test error",
            "value": f"{e:.2%}"} for h, e in ours.items()] + mechanism_rows)
    return ours, table


def _workers(workers: Mapping[str, Mapping[str, Any]],
             heads: Sequence[str]) -> list[tuple[Any, ...]]:
    """``(host, cpu, instruction set, threads, runs)`` for each kind of worker, over the runs
    of ``heads`` (a run record's keys start with the head: ``gap/...``, ``gap-max-...``)."""
    kinds = Counter((w["host"], w["cpu"], w["cpu_capability"], w["torch_threads"])
                    for key, w in workers.items() if re.split(r"[/-]", key, maxsplit=1)[0]
                    in heads)
    return [(*kind, count) for kind, count in sorted(kinds.items())]


@dataclass(frozen=True)
class ReportFacts:
    """Everything the report states. ``records`` are the train and evaluate stages' run
    records (data set, model, training, evaluation, environment); ``csv`` the tables written
    beside the report, by file stem."""

    heads: list[str]
    seeds: list[int]
    settings: ReportParams
    figures: dict[str, str]
    dataset: dict[str, Any]
    train_record: dict[str, Any]
    evaluate_record: dict[str, Any]
    workers: list[tuple[Any, ...]]
    claims: list[ClaimFacts]
    tested_heads: list[str]
    secondary: Secondary
    learning_rates: list[tuple[str, float, float]]  # head, chosen rate, mean validation loss
    tune_flags: TuneFlags
    parameters: pd.DataFrame
    factorial: pd.DataFrame | None
    accuracy: pd.DataFrame
    curve: Curve | None
    translation: Translation
    ablation: Ablation | None
    mechanism: MechanismFacts
    cams: CamFacts
    sum_pooling: SumPooling
    speed: Speed
    scope: Scope
    published_errors: dict[str, float]
    csv: dict[str, pd.DataFrame]
    commit: str | None = None  # the git commit the analysis ran at
    replication: pd.DataFrame | None = None  # beside the studies published on other data
    protocol_version: int = PROTOCOL_VERSION
    # where the mechanism stage's runs computed (trained, or the main runs scored again)
    mechanism_workers: list[tuple[Any, ...]] = field(default_factory=list)

    @property
    def level(self) -> str:
        return f"{self.settings.confidence:.0%}"

    @property
    def replication_verdicts(self) -> pd.DataFrame | None:
        """The ``replication`` table narrowed to the page: its verdicts, without each study's
        largest effect (those are in ``csv["replication"]``)."""
        if self.replication is None:
            return None
        return self.replication[[c for c in self.replication.columns
                                 if not c.endswith(": largest effect")]]


def _mechanism(collected: CollectedResults, heads: list[str], stride: int,
               confidence: float) -> MechanismFacts:
    """The mechanism experiment's facts, for the study's heads that it ran."""
    mechanism = collected.records["mechanism"]["mechanism"]
    in_mechanism = [h for h in heads if h in mechanism["heads"]]
    pooled = [h for h in in_mechanism if h not in FLATTEN_HEAD_NAMES]
    return mechanism_facts(collected.mechanism, collected.mechanism_grid, stride, mechanism,
                           collected.records["train"]["model"], in_mechanism, pooled,
                           confidence)


def _scope(collected: CollectedResults, tables: StudyTables, comparisons: pd.DataFrame,
           heads: list[str]) -> Scope:
    """``scope_facts`` from the stages' records: the evaluation's data set and grid, the
    training shifts of the train stage and of the mechanism's shift-trained cell."""
    evaluate = collected.records["evaluate"]
    return scope_facts(dataset=evaluate["dataset"], max_shift=evaluate["evaluate"]["max_shift"],
                       aggregate=tables.aggregate, comparisons=comparisons,
                       train_shifts=collected.records["train"]["train"]["shift"],
                       speed_run=collected.speed_run, heads=heads,
                       mechanism_shift=collected.records["mechanism"]["mechanism"].get(
                           "train_shift"))


def build_facts(*, collected: CollectedResults, tables: StudyTables, comparisons: pd.DataFrame,
                verdicts: pd.DataFrame, figures: Mapping[str, str], heads: Sequence[str],
                settings: ReportParams, commit: str | None = None,
                replication: pd.DataFrame | None = None) -> ReportFacts:
    """The report's facts from everything the stages wrote (``collected``), the tables and
    comparisons made from it, the figures (paths relative to the report), the git
    ``commit`` of the analysis and the ``replication`` table, if any."""
    train, evaluate = collected.records["train"], collected.records["evaluate"]
    heads, confidence = list(heads), settings.confidence
    stride = total_stride(train["model"]["widths"])
    mech = _mechanism(collected, heads, stride, confidence)
    translation = translation_facts(tables, main_runs(collected.grid), heads,
                                    evaluate["evaluate"]["max_shift"], stride, confidence)
    ablation, curve = ablation_facts(tables.ablation_aggregate, heads), \
        _curve(tables.curve_aggregate, heads)
    cams = cam_facts(tables.aggregate, heads)
    speed = _speed(tables, collected, heads, confidence)
    errors, published = _published(evaluate["dataset"]["name"], tables.aggregate, heads,
                                    published_rows(mech, collected.mechanism,
                                                   train["model"]["blur_size"]))
    csv = {"primary_comparisons": comparison_table(
               comparisons[comparisons.role == "primary"]) if len(comparisons) else None,
           "secondary_comparisons": comparison_table(
               comparisons[comparisons.role == "secondary"]) if len(comparisons) else None,
           "learning_curve": curve.table if curve else None,
           "accuracy_by_radius": translation.by_radius,
           "whole_cell_shifts": translation.alignment.table if translation.alignment
           else None,
           "phase_accuracy": translation.alignment.phases if translation.alignment else None,
           "shift_training": ablation.table if ablation else None,
           **mech.csv,
           "two_object_pointing": cams.two_objects.table if cams.two_objects else None,
           "epoch_times": speed.epochs, "published_numbers": published,
           "replication": replication}
    return ReportFacts(
        heads=heads, seeds=sorted(tables.main.seed.unique().tolist()), settings=settings,
        figures=dict(figures), dataset=evaluate["dataset"], train_record=train,
        evaluate_record=evaluate, workers=_workers(train["runs"], heads),
        mechanism_workers=_workers(collected.records["mechanism"].get("runs", {}), heads),
        claims=claim_facts(comparisons, verdicts), tested_heads=heads_under_test(heads),
        secondary=secondary_facts(comparisons),
        learning_rates=chosen_rates(collected.tuning, heads),
        tune_flags=tune_flags(collected.tune_choices, heads, evaluate["dataset"]["num_classes"]),
        parameters=_parameters(tables.main, heads),
        factorial=_factorial(tables.aggregate, heads),
        scope=_scope(collected, tables, comparisons, heads),
        accuracy=stat_table(tables.aggregate,
                            ["train_accuracy", "test_accuracy", "overfit_gap", "loss_gap"],
                            ["train accuracy", "test accuracy", "overfitting gap", "loss gap"],
                            heads),
        curve=curve, translation=translation, ablation=ablation, mechanism=mech, cams=cams,
        sum_pooling=sum_pooling_facts(tables.aggregate, heads, evaluate["feature_map"],
                                      train["learning_rates"], settings.margins.accuracy),
        speed=speed, published_errors=errors,
        csv={name: frame for name, frame in csv.items() if frame is not None}, commit=commit,
        replication=replication)
