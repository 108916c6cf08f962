"""The whole pipeline, end to end: `dvc repro` in a temporary copy of the repository with tiny
params, every notebook executed through papermill."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import matplotlib.image
import nbformat
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HEADS = ["dense", "gap", "gmp", "gsp"]
SEEDS = [0, 1]

pytestmark = pytest.mark.slow


def _run(args, cwd, check=True):
    env = {**os.environ, "DVC_NO_ANALYTICS": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({result.returncode}):\n"
                             f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
    return result


def _copy_repository(target: Path) -> None:
    """The files git would commit (tracked, or new and not ignored), nothing generated."""
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    (target / "dvc.lock").unlink(missing_ok=True)


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = tmp_path_factory.mktemp("repo")
    _copy_repository(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["heads"] = HEADS
    params["model"] = {"widths": [4, 8], "dense_hidden": 16}
    params["train"].update(seeds=SEEDS, epochs=2, batch_size=128)
    params["evaluate"]["max_shift"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], repo)
    result = _run(["dvc", "repro"], repo)
    return repo, result.stdout


def test_repro_writes_every_report_and_they_parse(repo):
    repo, _ = repo
    reports = repo / "reports"
    summary = pd.read_csv(reports / "summary.csv")
    assert sorted(zip(summary["head"], summary.seed, strict=True)) == sorted(
        (h, s) for h in HEADS for s in SEEDS)
    assert summary[["train_accuracy", "test_accuracy", "shift_accuracy_mean"]].notna().all().all()
    assert (summary.seconds_per_epoch > 0).all()
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == set(HEADS) and metrics["gap"]["params_head"] == 8 * 10 + 10

    text = (reports / "report.md").read_text()
    for section in ("claims", "## Parameters", "## Accuracy and overfitting",
                    "## Translation robustness", "## Training speed", "## Provenance"):
        assert section in text
    assert "| fewer parameters" in text and "supported" in text
    html = (reports / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 6 and 'src="figures' not in html

    figures = sorted(p.name for p in (reports / "figures").iterdir())
    assert figures == ["accuracy.png", "learning_curves.png", "params.png", "shift_heatmaps.png",
                       "shift_radius.png", "time.png"]
    for name in figures:
        assert matplotlib.image.imread(reports / "figures" / name).shape[0] > 100

    for head in HEADS:
        grid = pd.read_csv(reports / "eval" / head / "shift_grid.csv")
        assert len(grid) == len(SEEDS) * 5 * 5
        assert sorted(p.name for p in (repo / "models" / head).iterdir()) == [
            "seed_0.pt", "seed_1.pt"]
    executed = sorted(p.name for p in (reports / "notebooks").glob("*.ipynb"))
    assert len(executed) == 2 + 2 * len(HEADS)
    nb = nbformat.read(reports / "notebooks" / "train_gsp.ipynb", as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in nb.cells)
    assert not any(o.get("output_type") == "error" for c in nb.cells for o in c.get("outputs", []))


def test_repro_again_does_nothing(repo):
    repo, _ = repo
    result = _run(["dvc", "repro"], repo)
    assert "Running stage" not in result.stdout
    assert "up to date" in _run(["dvc", "status"], repo).stdout


def test_metrics_and_plots_are_visible_to_dvc(repo):
    repo, _ = repo
    shown = json.loads(_run(["dvc", "metrics", "show", "--json"], repo).stdout)
    (workspace,) = shown.values()
    values = workspace["data"]["reports/metrics.json"]["data"]
    assert values["gmp"]["seeds"] == len(SEEDS)
    plots = json.loads(_run(["dvc", "plots", "show", "--json"], repo).stdout)
    assert "reports/train/gap/history/seed_1.csv" in plots["data"]


def test_changing_an_evaluation_param_reruns_only_evaluate_and_report(repo):
    repo, _ = repo
    result = _run(["dvc", "exp", "run", "-S", "evaluate.max_shift=1"], repo)
    ran = {line.split("'")[1] for line in result.stdout.splitlines()
           if line.startswith("Running stage")}
    assert ran == {f"evaluate@{h}" for h in HEADS} | {"report"}
    grid = pd.read_csv(repo / "reports" / "eval" / "gap" / "shift_grid.csv")
    assert len(grid) == len(SEEDS) * 3 * 3
