"""The report stage on a small hand-made study in ``tmp_path`` (``hand_made_study``; no
training, no torch): the typed ``collect_results``, the report's facts and text, and every
figure. The whole report of this study is compared with a reviewed snapshot in
``test_report_render``."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from hand_made_study import (
    DATASET,
    EPOCH_SECONDS,
    FEATURE_MAP,
    FIGURES,
    HEADS,
    LEARNING_RATES,
    MECHANISM,
    RUNS,
    SETTINGS,
    STEP_SECONDS,
    WORKER,
    built_study,
    report_facts,
)

from gap_study.pipeline.paths import Layout
from gap_study.report.figures import save_figures, study_figures
from gap_study.report.render import render_report
from gap_study.report.tables import (
    RESULT_KEYS,
    RUN_KEYS,
    CollectedResults,
    collect_results,
    results_table,
    with_derived_metrics,
)


def test_collect_results_returns_typed_tables_in_the_order_of_heads(layout):
    collected = collect_results(layout, HEADS)
    assert isinstance(collected, CollectedResults)
    assert collected._fields == ("results", "grid", "history", "records", "cams",
                                 "step_times", "speed_run", "tuning", "tuning_runs",
                                 "tune_choices", "mechanism", "mechanism_grid")
    results = collected.results
    assert list(dict.fromkeys(results["head"])) == HEADS
    assert len(results) == len(HEADS) * len(RUNS)
    assert (results.seconds_per_epoch == np.median(EPOCH_SECONDS)).all()  # median epoch
    assert set(collected.grid["head"]) == set(HEADS)
    assert len(collected.history) == len(HEADS) * len(RUNS) * len(EPOCH_SECONDS)
    assert collected.records["evaluate"]["feature_map"] == FEATURE_MAP
    assert collected.records["train"]["model"]["widths"] == [8, 16]
    assert sorted(collected.cams) == ["gap", "gsp"]
    assert collected.cams["gap"]["shift"].tolist() == [1, -1]
    assert collected.step_times.groupby("head")["seconds_per_step"].min().to_dict() == {
        head: min(times) for head, times in STEP_SECONDS.items()}
    assert collected.speed_run["threads_per_run"] == 1
    assert len(collected.mechanism) == 2 * (6 + 1) * 2  # heads x (cells + shifted) x seeds
    assert collected.records["mechanism"]["mechanism"] == MECHANISM


def test_results_table_holds_every_run_of_both_parts_once(layout):
    collected = collect_results(layout, HEADS)
    results = with_derived_metrics(collected, time_target=SETTINGS.time_target)
    table = results_table(results, collected)
    assert list(table.columns[:len(RESULT_KEYS)]) == RESULT_KEYS
    assert not table.duplicated(RESULT_KEYS).any()
    main = table[table.part == "main"]
    # the main runs: the model section's cell, every test image, the derived metrics kept
    assert (main.downsample == "max").all() and (main.padding == "zeros").all()
    assert (main.test_images == DATASET["test_images"]).all()
    pd.testing.assert_frame_equal(main[results.columns].reset_index(drop=True), results,
                                  check_dtype=False)
    # the mechanism's runs: runs.csv as the stage wrote it, beside main runs of the same keys
    mechanism = table[table.part == "mechanism"].reset_index(drop=True)
    runs = pd.read_csv(layout.mechanism_runs)
    pd.testing.assert_frame_equal(mechanism[runs.columns], runs, check_dtype=False)
    assert len(table) == len(results) + len(runs)
    assert not main.merge(mechanism, on=RUN_KEYS).empty  # same run keys, told apart by part



def _report(layout: Layout) -> str:
    return render_report(report_facts(layout))



def test_report_has_every_section_the_study_ran_and_cites_docs_study_md(layout):
    text = _report(layout)
    for section in ("## In one minute", "## Contents", "## What was run",
                    "## The claims, tested", "## Learning rates", "## Parameters",
                    "## Accuracy and overfitting", "## Learning curve",
                    "## Translation robustness", "### Prediction stability",
                    "### Training with random shifts",
                    "## Why global pooling is not shift invariant", "## Class activation maps",
                    "### Two objects on a canvas",
                    "## Global sum vs global average pooling", "## Training speed",
                    "## Published numbers", "## Provenance"):
        assert text.count(section + "\n") == 1, section
    assert "## Spatial pooling or head capacity" not in text  # linear, gap_hidden did not run
    assert "STUDY.md" not in text
    assert "Metric definitions: `docs/study.md` (\"Metrics\")." in text
    assert "None of the published test errors in `docs/study.md` is on `digits`" in text
    assert "Heads: `dense`, `gsp` and `gap`," in text and "git commit `abc123`" in text
    assert "Training runs computed on node1 (test CPU, AVX2, 1 thread(s)): 18 runs." in text


def test_the_mechanisms_published_rows_are_in_the_published_numbers_on_any_data_set(layout):
    published = report_facts(layout).csv["published_numbers"]
    assert "Zhang 2019, ImageNet ResNet-50: consistency without / with a Bin-5 blur" \
        in published["source"].tolist()
    assert "this study: gap, max, zeros" in published["source"].tolist()


def test_sum_pooling_quotes_the_evaluation_record(layout):
    facts = report_facts(layout).sum_pooling
    assert (facts.channels, facts.height, facts.width) == (16, 4, 4)
    assert (facts.ratio, facts.deviation) == (16.00004, 2.5e-06)
    assert facts.shown and facts.results is None  # gsp ran, gsp_scaled did not


def test_stride_comes_from_the_backbone_widths(layout):
    translation = report_facts(layout).translation  # widths [8, 16]: one max-pool, stride 2
    assert translation.stride == 2 and translation.alignment is not None
    assert list(translation.alignment.table.columns) == ["head", "shifts by multiples of 2 px",
                                                         "all other shifts"]


def test_study_figures_draws_every_figure_and_saves_them(layout, tmp_path):
    collected, _, tables, comparisons = built_study(layout)
    paths = save_figures(study_figures(collected, tables, comparisons, HEADS),
                         tmp_path / "figures")
    assert sorted(paths) == FIGURES
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in paths.values())


def test_speed_is_judged_on_the_step_times_of_the_rounds_not_on_epoch_times(layout):
    _, _, _, comparisons = built_study(layout)
    speed = comparisons[comparisons.metric == "seconds_per_step"].set_index("head")
    assert list(speed.index) == ["gsp", "gap"]
    assert speed.loc["gap", "baseline_mean"] == pytest.approx(0.030)
    assert speed.loc["gap", "n"] == 3  # rounds
    assert (speed["setting"] == "training steps timed in turns, 3 rounds").all()
    speed = report_facts(layout).speed.table.set_index("head")
    assert speed.loc["dense", "per step, over rounds"] == "30.00 [27.52, 32.48] ms"
    assert speed.loc["gap", "dense / head (best rounds)"] == "2.90x"  # 29 ms / 10 ms


def test_time_to_target_takes_the_first_epoch_at_the_target_times_the_step_time(layout):
    _, results, _, _ = built_study(layout)
    main = results[(results.fraction == 1.0) & (results.train_shift == 0)].set_index("head")
    # validation accuracy 0.25 per epoch reaches 0.5 at epoch 2; 80 // 16 = 5 steps an epoch
    assert main.loc["gap", "time_to_target"].tolist() == pytest.approx([2 * 5 * 0.010] * 2)
    assert main.loc["dense", "time_to_target"].tolist() == pytest.approx([2 * 5 * 0.029] * 2)


def test_the_summary_opens_the_report_with_one_line_per_claim_and_its_verdicts(layout):
    text = _report(layout)
    summary = text.split("## In one minute")[1].split("## ")[0]
    claims = [line for line in summary.splitlines() if line.startswith("- **")]
    assert [line.split("**")[1] for line in claims] == [
        "Fewer parameters", "Less overfitting", "More translation robust", "Faster training",
        "Feature maps tied to classes"]
    assert "trainable head parameters **holds** (2 better of 2)" in summary
    assert len(summary.split()) <= 120  # the first screen: summary, then the forest plot
    assert summary.rstrip().endswith("![Every primary comparison](figures/forest.png)")


def test_the_learning_rates_name_each_heads_choice_and_the_fragile_ones(layout):
    facts = report_facts(layout)
    assert [head for head, _, _ in facts.learning_rates] == HEADS
    chosen = {head: (lr, loss) for head, lr, loss in facts.learning_rates}
    # the mean loss over the two tuning seeds
    assert chosen["gsp"] == (LEARNING_RATES["gsp"], pytest.approx(0.205))
    assert facts.tune_flags.fragile == ["gsp"]
    assert facts.tune_flags.at_bound == [("gap", LEARNING_RATES["gap"])]
    text = _report(layout)
    assert "Fragile choices" in text and "At a bound of the search" in text


def test_a_head_no_rate_trained_is_named_untrained_first_and_under_learning_rates(layout):
    choices = pd.read_csv(layout.tune_choices)
    untrained = choices["head"] == "gsp"
    choices.loc[untrained, ["val_loss", "at_chance"]] = [1.5, True]  # ln 4 = 1.386
    choices.to_csv(layout.tune_choices, index=False)
    facts = report_facts(layout)
    assert facts.tune_flags.at_chance == [("gsp", LEARNING_RATES["gsp"], 1.5)]
    text = _report(layout)
    summary = text.split("## In one minute")[1].split("\n- **")[0]
    assert "**Untrained: `gsp`.** No learning rate tried took its mean validation loss more " \
           "than 1% below ln 4 = 1.386" in " ".join(summary.split())
    assert "**At chance or worse**, so no rate tried trained these heads: `gsp` (0.0003: " \
           "1.5000), each at least 1.3724, 1% below ln 4 = 1.3863 for giving every class the " \
           "same probability. A grid of other rates (`tune.learning_rates`, `tune.lr_min` and " \
           "`tune.lr_max`) or more training (`train.epochs` and `data.max_train`)" \
           in " ".join(text.split())
    choices["at_chance"] = False
    choices.to_csv(layout.tune_choices, index=False)
    trained = _report(layout)
    assert "Untrained" not in trained and "At chance or worse" not in trained


def test_the_report_counts_the_test_images_the_evaluate_stage_used(layout):
    # the train stage's record has no test split; the report must not say "0 test images"
    assert report_facts(layout).dataset["test_images"] == 20
    text = _report(layout)
    assert "80 training, 8 validation and 20 test images of 8x8 pixels" in text
    assert "; 40 two-object canvases made of test objects." in text


def test_a_report_of_fewer_heads_than_the_study_ran_reads_only_their_rows(layout):
    # run_notebook -p heads [dense, gap] on a study of dense, gsp and gap: the speed, tuning
    # and mechanism tables hold gsp too, and the figures colour only the report's heads
    heads = ["dense", "gap"]
    collected, _, tables, comparisons = built_study(layout, heads)
    for name in ("step_times", "tuning", "tuning_runs", "tune_choices", "mechanism",
                 "mechanism_grid"):
        assert set(getattr(collected, name)["head"]) <= set(heads), name
    assert "gsp" in set(pd.read_csv(layout.step_times)["head"])
    facts = report_facts(layout, heads=heads)
    render_report(facts)
    # the provenance counts the runs of the report's heads
    assert sum(w[-1] for w in facts.workers) == len(heads) * len(RUNS)
    mechanism = pd.read_csv(layout.mechanism_runs)
    assert sum(w[-1] for w in facts.mechanism_workers) == mechanism["head"].isin(heads).sum()
    for name, table in facts.csv.items():
        if "head" in table:
            assert set(table["head"]) <= set(heads), name
    figures = study_figures(collected, tables, comparisons, heads)
    assert set(figures) >= {"time", "tuning"}
    matplotlib.pyplot.close("all")


def test_the_facts_take_the_mechanisms_shift_and_workers_from_its_record(layout):
    facts = report_facts(layout)
    assert facts.scope.mechanism_shift == MECHANISM["train_shift"]
    runs = len(pd.read_csv(layout.mechanism_runs))
    assert facts.mechanism_workers == [(WORKER["host"], WORKER["cpu"], WORKER["cpu_capability"],
                                        WORKER["torch_threads"], runs)]


def test_time_to_target_counts_an_epochs_steps_as_training_took_them(layout):
    # 85 training images in batches of 16: 5 steps an epoch when the last short batch is
    # dropped (the record's drop_last), 6 when it is kept
    collected = collect_results(layout, HEADS)
    collected.records["train"]["dataset"]["train_images"] = 85

    def gap_times() -> list[float]:
        results = with_derived_metrics(collected, time_target=SETTINGS.time_target)
        main = results[(results.fraction == 1.0) & (results.train_shift == 0)]
        return main.set_index("head").loc["gap", "time_to_target"].tolist()

    assert gap_times() == pytest.approx([2 * 5 * 0.010] * 2)
    collected.records["train"]["train"]["drop_last"] = False
    assert gap_times() == pytest.approx([2 * 6 * 0.010] * 2)
