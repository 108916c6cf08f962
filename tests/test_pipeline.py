"""The whole pipeline, end to end: `dvc repro` in a temporary copy of the repository with tiny
params, every notebook executed through papermill.

The heads are the fewest that take every path of the report: `dense` (the baseline, no class
map), `gap` (a class map) and `gsp` (with `gap`, the sum-pooling section). Every head is
covered by the unit tests of the modules.
"""

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import matplotlib.image
import nbformat
import pandas as pd
import pytest
import yaml
from builders import (
    TINY_SEEDS,
    TINY_VARIANTS,
    command_env,
    deterministic_outputs,
    run_command,
    tiny_repository,
)

HEADS = ["dense", "gap", "gsp"]
SECTIONS = ("claims", "## Parameters", "## Accuracy and overfitting", "## Learning curve",
            "## Translation robustness", "### Training with random shifts",
            "### Prediction stability", "## Class activation maps",
            "## Global sum vs global average pooling", "## Training speed",
            "## Published numbers", "## Provenance")
CLAIMS = ("fewer parameters", "less overfitting", "more translation robust", "faster training",
          "feature maps tied to classes")
FIGURES = ["accuracy.png", "cam_overlays.png", "fraction_curve.png", "params.png",
           "pointing.png", "shift_heatmaps.png", "shift_radius.png", "shift_training.png",
           "stability.png", "time.png", "training_curves.png"]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """The tiny study after one `dvc repro`, and its deterministic outputs at that point
    (the tests at the end of this file change the repository)."""
    repo = tiny_repository(tmp_path_factory.mktemp("repo"), HEADS)
    run_command(["dvc", "repro"], repo)
    return repo, deterministic_outputs(repo)


@pytest.fixture(scope="module")
def reports(repo) -> Path:
    return repo[0] / "reports"


def test_summary_has_one_row_per_head_and_seed_of_the_main_runs(reports):
    summary = pd.read_csv(reports / "summary.csv")
    assert sorted(zip(summary["head"], summary.seed, strict=True)) == sorted(
        (h, s) for h in HEADS for s in TINY_SEEDS)
    assert (summary.fraction == 1).all() and (summary.train_shift == 0).all()
    assert summary[["train_accuracy", "test_accuracy", "shift_accuracy_mean"]].notna().all().all()
    assert (summary.seconds_per_epoch > 0).all()


def test_results_have_a_row_per_run_and_grid_metrics_only_for_the_whole_training_set(reports):
    results = pd.read_csv(reports / "results.csv")
    assert sorted(zip(results["head"], results.fraction, results.train_shift, results.seed,
                      strict=True)) == sorted((h, f, t, s) for h in HEADS
                                              for f, t in TINY_VARIANTS for s in TINY_SEEDS)
    half = results[results.fraction == 0.5]
    assert half.overfit_gap.notna().all() and half.shift_accuracy_mean.isna().all()
    assert (half.train_images == round(0.5 * results.train_images.max())).all()
    assert results.loc[results.fraction == 1, "shift_accuracy_mean"].notna().all()


def test_metrics_json_has_every_head_and_exact_head_parameters(reports):
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == set(HEADS) and metrics["gap"]["params_head"] == 8 * 10 + 10
    assert metrics["gsp"]["seeds"] == len(TINY_SEEDS)


def test_report_has_every_section_claim_and_setting(reports):
    text = (reports / "report.md").read_text()
    assert [section for section in SECTIONS if section not in text] == []
    assert [claim for claim in CLAIMS if f"| {claim}" not in text] == []
    assert "random shifts up to 2 px" in text and "50% of the training images" in text


def test_figures_are_exactly_those_the_report_shows_and_html_embeds_them(reports):
    text = (reports / "report.md").read_text()
    figures = sorted(p.name for p in (reports / "figures").iterdir())
    assert figures == FIGURES
    assert figures == sorted(set(re.findall(r"\(figures/(\w+\.png)\)", text)))
    for name in figures:
        assert matplotlib.image.imread(reports / "figures" / name).shape[0] > 100
    html = (reports / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == len(FIGURES)
    assert 'src="figures' not in html


def test_only_heads_with_a_class_map_get_pointing_accuracy_and_examples(reports):
    summary = pd.read_csv(reports / "summary.csv")
    assert summary.loc[summary["head"] == "dense", "pointing_accuracy"].isna().all()
    assert summary.loc[summary["head"] != "dense", "pointing_accuracy"].between(0, 1).all()
    has_examples = {h: (reports / "eval" / h / "cam_examples.npz").exists() for h in HEADS}
    assert has_examples == {"dense": False, "gap": True, "gsp": True}


def test_each_head_has_its_checkpoints_shift_grid_and_executed_notebooks(repo, reports):
    for head in HEADS:
        grid = pd.read_csv(reports / "eval" / head / "shift_grid.csv")
        assert len(grid) == 2 * len(TINY_SEEDS) * 5 * 5  # two training shifts on all the data
        assert sorted(p.name for p in (repo[0] / "models" / head).iterdir()) == sorted(
            f"fraction_{f:g}-shift_{t}-seed_{s}.pt" for f, t in TINY_VARIANTS for s in TINY_SEEDS)
    executed = sorted(p.name for p in (reports / "notebooks").glob("*.ipynb"))
    assert len(executed) == 2 + 2 * len(HEADS)
    nb = nbformat.read(reports / "notebooks" / "train_gsp.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


def test_repro_again_does_nothing(repo):
    result = run_command(["dvc", "repro"], repo[0])
    assert "Running stage" not in result.stdout
    assert "up to date" in run_command(["dvc", "status"], repo[0]).stdout


def test_metrics_and_plots_are_visible_to_dvc(repo):
    shown = json.loads(run_command(["dvc", "metrics", "show", "--json"], repo[0]).stdout)
    (workspace,) = shown.values()
    values = workspace["data"]["reports/metrics.json"]["data"]
    assert values["gap"]["seeds"] == len(TINY_SEEDS)
    plots = json.loads(run_command(["dvc", "plots", "show", "--json"], repo[0]).stdout)
    assert "reports/train/gap/history/fraction_1-shift_0-seed_1.csv" in plots["data"]


# ---------------------------------------------------------------------------------------
# The tests below change the repository; each leaves it with the same deterministic outputs.


def _training_cell_running(repo: Path, head: str) -> bool:
    """Whether ``head``'s train notebook is executing its training cell right now (papermill
    saves the executed notebook with each cell's status as it goes)."""
    try:
        nb = json.loads((repo / "reports" / "notebooks" / f"train_{head}.ipynb").read_text())
    except (OSError, ValueError):  # not there yet, or being rewritten this very moment
        return False
    return any("train_run(" in "".join(cell["source"])
               and cell["metadata"].get("papermill", {}).get("status") == "running"
               for cell in nb["cells"])


def test_interrupted_training_resumes_to_byte_identical_results(repo):
    repo, before = repo
    # A shell that starts the test suite in the background makes its children ignore SIGINT,
    # and an ignored SIGINT is inherited: restore the terminal's default, as in `make repro`.
    process = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train@gap"],
                               cwd=repo, env=command_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not _training_cell_running(repo, "gap") and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    assert process.wait(timeout=120) != 0, "dvc repro finished before it could be interrupted"
    assert not (repo / "models" / "gap").exists()  # nothing half-written for the next stage

    run_command(["dvc", "repro"], repo)  # picks up where it stopped
    assert "up to date" in run_command(["dvc", "status"], repo).stdout
    assert deterministic_outputs(repo) == before


def test_changing_an_evaluation_param_reruns_only_evaluate_and_report(repo):
    repo, _ = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["evaluate"]["max_shift"] = 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    result = run_command(["dvc", "repro"], repo)
    ran = {line.split("'")[1] for line in result.stdout.splitlines()
           if line.startswith("Running stage")}
    assert ran == {f"evaluate@{h}" for h in HEADS} | {"report"}
    grid = pd.read_csv(repo / "reports" / "eval" / "gap" / "shift_grid.csv")
    assert len(grid) == 2 * len(TINY_SEEDS) * 3 * 3


def test_a_notebook_error_fails_its_stage_shows_the_error_and_keeps_the_notebook(repo):
    repo, _ = repo
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["device"] = "cuda:7"  # not on this machine (nor on a 1-GPU one)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    failed = run_command(["dvc", "repro", "--single-item", "train@gap"], repo, check=False)
    assert failed.returncode != 0
    shown = failed.stdout + failed.stderr
    assert "notebooks/train.ipynb failed in cell" in shown and "cuda:7" in shown
    executed = nbformat.read(repo / "reports" / "notebooks" / "train_gap.ipynb", as_version=4)
    assert any(o.get("output_type") == "error"
               for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert not (repo / "models" / "gap").exists()  # nothing half-written for the next stage
