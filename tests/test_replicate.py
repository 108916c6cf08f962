"""gap_study.replicate: published studies side by side, and README's generated results."""

import json
from pathlib import Path

import pandas as pd
import pytest

from gap_study.replicate import (
    README_END,
    README_START,
    Study,
    beside_published,
    main,
    outcome,
    publish,
    read_study,
    readme_section,
    replication_table,
    update_readme,
)
from gap_study.report.protocol import PROTOCOL_VERSION

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("verdicts, expected", [
    (["holds", "holds"], "replicated"),
    (["no difference", "no difference", "no difference"], "replicated"),
    (["holds", "fails"], "not replicated"),
    (["holds", "no difference"], "not replicated"),
    (["holds", "undecided", "fails"], "not replicated"),  # a disagreement outweighs a gap
    (["holds", "undecided"], "inconclusive in one"),
    (["mixed", "holds"], "inconclusive in one"),  # mixed decides nothing for the claim
    (["undecided", "mixed", "holds"], "inconclusive in 2"),
    (["undecided", "undecided"], "inconclusive in all"),
])
def test_a_claim_replicates_only_when_every_study_gives_the_same_decisive_word(verdicts,
                                                                                expected):
    assert outcome(verdicts) == expected


def _entry(verdict: str, effect: float = 0.01, low: float | None = 0.0,
           high: float | None = 0.02) -> dict:
    return {"verdict": verdict, "largest": "gap vs dense", "effect": effect,
            "adjusted_low": low, "adjusted_high": high, "tests": 2,
            # an exact count's intervals are its value; a test's difference interval is wider
            "difference_low": None if low is None else low - 0.01 * (low != high),
            "difference_high": None if high is None else high + 0.01 * (low != high)}


def _study(name: str, **verdicts: str) -> Study:
    claims = {"less overfitting": {"test_accuracy": _entry(verdicts.get("accuracy", "holds"))},
              "fewer parameters": {"params_head": _entry("holds", 900.0, 900.0, 900.0)}}
    if "consistency" in verdicts:
        claims["more translation robust"] = {"consistency_exact":
                                             _entry(verdicts["consistency"], None, None)}
    record = {"dataset": {"name": name, "test_images": 450}, "protocol_version": 4,
              "commit": "0123456789abcdef", "machine": "test CPU"}
    return Study(name, claims, record)


def test_the_table_holds_every_claim_all_studies_tested_in_the_protocols_order():
    table = replication_table([_study("digits", accuracy="holds", consistency="holds"),
                               _study("mnist_5k", accuracy="undecided")])
    # consistency was not tested on mnist_5k: not a row; parameters come first, as declared
    assert table.metric.tolist() == ["`params_head`", "`test_accuracy`"]
    assert table.replication.tolist() == ["replicated", "inconclusive in one"]
    assert table["digits: largest effect"].tolist() == [
        "gap vs dense: +900 (exact)",
        "gap vs dense: +1.0 pts [+0.0, +2.0] (difference [-1.0, +3.0])"]
    assert "replication" not in replication_table([_study("digits")])  # one study: no outcome
    with pytest.raises(ValueError, match="no published study"):
        replication_table([])


def _reports(tmp_path: Path) -> Path:
    """The files ``publish`` reads, as the stages write them."""
    reports = tmp_path / "reports"
    for stage in ("eval", "speed", "train"):
        (reports / stage).mkdir(parents=True)
    dataset = {"name": "digits", "test_images": 450}
    (reports / "eval" / "run.json").write_text(json.dumps({"dataset": dataset,
                                                           "heads": ["dense", "gap"]}))
    environment = {"device_name": "AMD EPYC", "cpu_capability": "AVX512", "torch": "2.13.0",
                   "git_commit": "abc123"}
    (reports / "speed" / "run.json").write_text(json.dumps({"environment": environment,
                                                            "threads_per_run": 1}))
    (reports / "train" / "run.json").write_text(json.dumps({"environment": environment,
                                                            "train": {"seeds": [0, 1]}}))
    (reports / "claims.json").write_text(json.dumps(_study("digits").claims))
    (reports / "report_run.json").write_text(json.dumps({"protocol_version": PROTOCOL_VERSION,
                                                         "commit": "def456"}))
    (reports / "tune").mkdir()
    pd.DataFrame({"head": ["dense", "gap"], "lr": 0.003, "val_loss": [0.03, 0.02],
                  "at_chance": False}).to_csv(reports / "tune" / "choices.csv", index=False)
    pd.DataFrame({"head": ["gap", "gap"], "metric": ["test_accuracy", "train_loss"], "n": 2,
                  "mean": [0.99, 0.1], "std": 0.01, "ci_low": 0.9, "ci_high": 1.0}).to_csv(
        reports / "aggregate.csv", index=False)
    return reports


def test_a_test_whose_analysis_changed_between_the_studies_versions_is_not_compared():
    maps = ("feature maps tied to classes", "pointing_gradcam_two_objects_recognised")
    studies = []
    for name, version, verdict in (("digits", 5, "holds"), ("mnist_5k", 4, "undecided")):
        study = _study(name)
        study.claims[maps[0]] = {maps[1]: _entry(verdict)}
        study.record["protocol_version"] = version
        studies.append(study)
    table = replication_table(studies).set_index("metric")["replication"]
    assert table[f"`{maps[1]}`"] == ("not compared: its analysis changed between protocol "
                                     "versions 4 and 5")
    assert table["`test_accuracy`"] == "replicated"  # unchanged in 5: compared as before
    studies[1].record["protocol_version"] = 5
    assert replication_table(studies).set_index("metric")["replication"][
        f"`{maps[1]}`"] == "inconclusive in one"


def test_publishing_a_study_keeps_its_claims_summary_commit_and_machine(tmp_path):
    target = publish("digits", reports=_reports(tmp_path), results=tmp_path / "results")
    study = read_study(target)
    assert study.claims == _study("digits").claims
    # the analysis's commit and version (the report stage's), and where the models trained
    assert (study.record["commit"], study.record["trained_at"]) == ("def456", "abc123")
    assert study.record["protocol_version"] == PROTOCOL_VERSION
    assert study.record["machine"].startswith("AMD EPYC, AVX512 kernels, 1 thread(s)")
    summary = pd.read_csv(target / "summary.csv")
    assert summary.metric.tolist() == ["test_accuracy"]  # the headline metrics only


def test_a_folder_that_was_not_published_names_the_missing_file_and_the_fix(tmp_path):
    (tmp_path / "mnist_5k").mkdir()
    with pytest.raises(FileNotFoundError, match=r"claims.json is missing.*publish mnist_5k"):
        read_study(tmp_path / "mnist_5k")


def test_the_readme_section_is_rewritten_between_its_markers_and_checked(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\n## Results\n\n{README_START}\nold\n{README_END}\n\nmore\n")
    studies = [_study("digits"), _study("mnist_5k", accuracy="fails")]
    assert not update_readme(readme, studies, check=True)
    assert update_readme(readme, studies)
    text = readme.read_text()
    assert text.startswith("# Title\n\n## Results\n\n") and text.endswith("\n\nmore\n")
    assert readme_section(studies) in text and "not replicated" in text
    assert update_readme(readme, studies, check=True)
    assert "commit `0123456789ab`" in text  # 12 digits, and a -dirty mark kept:
    dirty = Study("x", studies[0].claims, {**studies[0].record, "commit": "0123456789abcd-dirty"})
    assert "commit `0123456789ab-dirty`" in readme_section([dirty])
    readme.write_text("# no section\n")
    with pytest.raises(ValueError, match="no generated results section"):
        update_readme(readme, studies)


def test_the_command_fails_with_the_fix_when_the_readme_is_out_of_date(tmp_path, capsys):
    results = tmp_path / "results"
    publish("digits", reports=_reports(tmp_path), results=results)
    readme = tmp_path / "README.md"
    readme.write_text(f"{README_START}\n{README_END}\n")
    arguments = ["--results", str(results), "readme", "--readme", str(readme)]
    assert main([*arguments, "--check"]) == 1
    assert "Fix: python -m gap_study.replicate readme" in capsys.readouterr().err
    assert main(arguments) == 0 and main([*arguments, "--check"]) == 0


def test_the_committed_readme_shows_what_the_committed_results_give():
    studies = [read_study(p) for p in sorted((ROOT / "results").iterdir())
               if (p / "claims.json").exists()]
    assert studies, "results/ holds no published study"
    assert update_readme(ROOT / "README.md", studies, check=True), (
        "README.md's results table differs from results/: python -m gap_study.replicate "
        "readme")


def test_a_run_is_set_beside_the_studies_published_on_other_data_sets(tmp_path):
    results = tmp_path / "results"
    publish("digits", reports=_reports(tmp_path), results=results)
    claims = _study("mnist_5k", accuracy="undecided").claims
    table = beside_published(claims, "mnist_5k", results)
    assert list(table.columns[2:4]) == ["this run: verdict", "this run: largest effect"]
    assert table.replication.tolist() == ["replicated", "inconclusive in one"]
    # the run's own data set is the study it reruns, not a replication; none published: none
    assert beside_published(claims, "digits", results) is None
    assert beside_published(claims, "mnist_5k", tmp_path / "nothing") is None


def test_publishing_takes_the_protocol_version_the_report_ran_at_not_this_codes(tmp_path):
    reports = _reports(tmp_path)
    (reports / "report_run.json").write_text(json.dumps({"protocol_version": 4,
                                                         "commit": "old789"}))
    record = read_study(publish("digits", reports=reports, results=tmp_path / "r")).record
    assert (record["protocol_version"], record["commit"]) == (4, "old789")
    (reports / "report_run.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"report_run\.json is missing.*dvc repro"):
        publish("digits", reports=reports, results=tmp_path / "r")


def test_a_study_with_a_head_no_rate_trained_is_not_published(tmp_path):
    reports, results = _reports(tmp_path), tmp_path / "results"
    choices = reports / "tune" / "choices.csv"
    pd.DataFrame({"head": ["dense", "gap", "gmp"], "lr": 0.003, "val_loss": [0.03, 2.4, 2.5],
                  "at_chance": [False, True, True]}).to_csv(choices, index=False)
    # gmp is not among the evaluated heads (dense, gap): only gap is named
    with pytest.raises(ValueError, match=r"^gap: no learning rate tried trained it "
                                         r"\(.*choices\.csv, at_chance\).*tune\.learning_rates"):
        publish("digits", reports=reports, results=results)
    assert not results.exists()  # nothing half-published
    pd.read_csv(choices).drop(columns="at_chance").to_csv(choices, index=False)
    with pytest.raises(ValueError, match=r"no at_chance column.*run dvc repro"):
        publish("digits", reports=reports, results=results)


def test_a_largest_comparison_not_made_or_bounded_says_so_in_the_table():
    unmade = {**_entry("undecided", None, None, None), "largest_note": "not made"}
    bounded = {**_entry("undecided", 0.5, 0.2, 0.9), "largest_note": "bounded"}
    studies = [_study("digits"), _study("mnist_5k")]
    studies[0].claims["less overfitting"]["test_accuracy"] = unmade
    studies[1].claims["less overfitting"]["test_accuracy"] = bounded
    row = replication_table(studies).set_index("metric").loc["`test_accuracy`"]
    assert row["digits: largest effect"] == "gap vs dense: no comparison (not made)"
    assert row["mnist_5k: largest effect"].endswith("(bounded)")
