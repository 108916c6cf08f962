"""gap_study.report.dvc_views: the verdicts, headline numbers and plot tables DVC shows, on
hand-made results, and dvc.yaml declaring the same files."""

import json

import numpy as np
import pandas as pd
import pytest
import yaml

from gap_study.report.dvc_views import (
    CLAIM_KEYS,
    HEADLINE_METRICS,
    NOT_TESTED,
    VIEW_FILES,
    headline_record,
    learning_curve,
    training_curves,
    verdict_record,
    write_dvc_views,
)
from gap_study.report.protocol import CLAIMS, PROTOCOL

HEADS = ["dense", "gap"]


def _results() -> pd.DataFrame:
    """Two heads, two seeds; per seed a main run (fraction 1, centred), a 10% run and a run
    trained with shifts of up to 2 pixels, whose values must stay out of the headline."""
    rows = []
    for head, params in [("dense", 805_510), ("gap", 650)]:
        for seed in (0, 1):
            for fraction, shift, images in [(1.0, 0, 1000), (0.1, 0, 100), (1.0, 2, 1000)]:
                main = (fraction, shift) == (1.0, 0)
                rows.append({
                    "head": head, "fraction": fraction, "train_shift": shift, "seed": seed,
                    "train_images": float(images), "params_head": params,
                    "train_accuracy": 1.0,
                    "test_accuracy": (0.9 + 0.02 * seed) if main else 0.5,
                    "test_loss": 0.1, "consistency_exact": 0.2 if head == "dense" else 0.7,
                    "pointing_gradcam_two_objects_recognised":
                        np.nan if head == "dense" else 0.8 + 0.1 * seed})
    return pd.DataFrame(rows)


def _history() -> pd.DataFrame:
    rows = [{"head": head, "fraction": fraction, "train_shift": shift, "seed": seed,
             "epoch": epoch, "train_loss": 1 / epoch, "train_accuracy": 0.5,
             "val_loss": 2 / epoch, "val_accuracy": 0.4, "epoch_seconds": 0.1,
             "images_per_second": 100.0}
            for head in ("gap", "dense") for seed in (1, 0)
            for fraction, shift in [(0.1, 0), (1.0, 0), (1.0, 2)] for epoch in (2, 1)]
    return pd.DataFrame(rows)


STEP_TIMES = pd.DataFrame({"head": ["dense", "dense", "gap", "gap"], "round": [0, 1, 0, 1],
                           "seconds_per_step": [0.010, 0.014, 0.004, 0.006]})


def _verdicts(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame([{"claim": c, "metric": m, "verdict": v, "tests": 2, "better": 0,
                          "worse": 0, "equivalent": 0, "inconclusive": 2} for c, m, v in rows])


def test_every_claim_of_the_protocol_has_a_short_verdict_key():
    assert list(CLAIM_KEYS) == list(CLAIMS)
    assert {test.claim for test in PROTOCOL} == set(CLAIM_KEYS)


def test_verdicts_give_one_word_per_claim_and_join_different_words_in_protocol_order():
    verdicts = _verdicts([("fewer parameters", "params_head", "holds"),
                          ("less overfitting", "test_accuracy", "undecided"),
                          ("less overfitting", "test_loss", "undecided"),
                          ("faster training", "seconds_per_step", "holds"),
                          ("faster training", "time_to_target", "mixed"),
                          ("more translation robust", "consistency_exact", "fails")])
    assert verdict_record(verdicts) == {"params": "holds", "overfit": "undecided",
                                        "shifts": "fails", "speed": "holds/mixed",
                                        "maps": NOT_TESTED}


def test_no_comparison_at_all_leaves_every_claim_not_tested():
    assert set(verdict_record(pd.DataFrame()).values()) == {NOT_TESTED}


def test_a_claim_without_a_short_key_is_refused_not_dropped():
    with pytest.raises(ValueError, match="new claim"):
        verdict_record(_verdicts([("new claim", "metric", "holds")]))


def test_headline_metrics_are_primary_metrics_of_the_protocol():
    primary = {test.metric for test in PROTOCOL if test.primary}
    assert set(HEADLINE_METRICS.values()) <= primary


def test_headline_averages_the_main_runs_over_seeds_and_the_step_time_over_rounds():
    record = headline_record(_results(), STEP_TIMES, HEADS)
    assert list(record) == HEADS
    assert record["dense"] == pytest.approx({
        "accuracy": 0.91, "head_params": 805_510, "exact_consistency": 0.2, "pointing": None,
        "seconds_per_step": 0.012})
    assert record["gap"]["pointing"] == pytest.approx(0.85)
    assert isinstance(record["gap"]["head_params"], int)
    json.dumps(record, allow_nan=False)  # what write_json requires


def test_headline_leaves_out_heads_without_runs_and_nulls_an_untimed_step():
    record = headline_record(_results(), STEP_TIMES[STEP_TIMES["head"] == "gap"],
                             ["gap", "gmp", "dense"])
    assert list(record) == ["gap", "dense"]
    assert record["dense"]["seconds_per_step"] is None


def test_training_curves_hold_the_main_runs_per_epoch_in_head_order():
    curves = training_curves(_history(), HEADS)
    assert list(curves.columns) == ["head", "seed", "epoch", "train_loss", "train_accuracy",
                                    "val_loss", "val_accuracy"]
    assert list(zip(curves["head"], curves["seed"], curves["epoch"], strict=True)) == [
        (h, s, e) for h in HEADS for s in (0, 1) for e in (1, 2)]


def test_learning_curve_holds_every_centred_run_with_its_training_images():
    curve = learning_curve(_results(), ["gap"])
    assert list(zip(curve["fraction"], curve["seed"], curve["train_images"], strict=True)) == [
        (0.1, 0, 100), (0.1, 1, 100), (1.0, 0, 1000), (1.0, 1, 1000)]
    assert curve["train_images"].dtype == np.int64


def test_views_are_written_where_dvc_yaml_declares_them(tmp_path, root):
    verdicts = _verdicts([("fewer parameters", "params_head", "holds")])
    paths = write_dvc_views(tmp_path, results=_results(), history=_history(),
                            step_times=STEP_TIMES, verdicts=verdicts, heads=HEADS)
    assert {name: path.relative_to(tmp_path) for name, path in paths.items()} == VIEW_FILES
    assert json.loads(paths["verdicts"].read_text())["params"] == "holds"
    assert len(pd.read_csv(paths["learning_curve"])) == 8

    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    report = dvc["stages"]["report"]
    declared = {name: options for entry in [*report["outs"], *report["metrics"]]
                if isinstance(entry, dict) for name, options in entry.items()}
    kept_in_git = {"cache": False, "persist": True}  # never deleted before the stage runs
    for name in ("verdicts", "headline"):  # committed to git, as claims.json
        assert declared[f"reports/{VIEW_FILES[name].as_posix()}"] == kept_in_git
    # the verdicts alone are DVC's metrics: every key of every metrics file is a column
    assert report["metrics"] == [{"reports/verdicts.json": kept_in_git}]
    assert "reports/plots" in report["outs"]
    plotted = {file for plot in dvc["plots"] if isinstance(plot, dict)
               for options in plot.values() for file in options["y"]}
    assert {f"reports/{VIEW_FILES[n].as_posix()}" for n in ("training_curves",
                                                            "learning_curve")} <= plotted
