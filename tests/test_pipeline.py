"""The whole pipeline, end to end: `dvc repro` in a temporary copy of the repository with tiny
params, every notebook executed through papermill."""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import matplotlib.image
import nbformat
import numpy as np
import pandas as pd
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
HEADS = ["dense", "gap", "gmp", "gsp", "gem", "lse", "avgmax", "nin"]  # every head
SEEDS = [0, 1]

pytestmark = pytest.mark.slow


def _env(**extra_env) -> dict[str, str]:
    return {**os.environ, "DVC_NO_ANALYTICS": "1", **extra_env,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def _run(args, cwd, check=True, **extra_env):
    result = subprocess.run(args, cwd=cwd, env=_env(**extra_env), capture_output=True, text=True)
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


def _tiny_repository(repo: Path, heads: list[str]) -> Path:
    """A git repository with the project's files and tiny params, nothing run yet."""
    _copy_repository(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["heads"] = heads
    params["data"].update(max_train=400, max_test=150)  # a stratified third of the digits
    params["model"].update(widths=[4, 8], dense_hidden=16)
    params["train"].update(seeds=SEEDS, epochs=2, batch_size=128, fractions=[0.5, 1.0],
                           shift=[0, 2])
    params["evaluate"]["max_shift"] = 2
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], repo)
    _run(["git", "add", "-A"], repo)
    _run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "tiny"], repo)
    return repo


def _outputs(repo: Path) -> dict[str, bytes]:
    """Every deterministic output per head: model weights and evaluation metrics."""
    files = [*sorted((repo / "models").glob("*/*.pt")),
             *sorted((repo / "reports" / "eval").glob("*/metrics.csv"))]
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in files}


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = _tiny_repository(tmp_path_factory.mktemp("repo"), HEADS)
    _run(["dvc", "repro"], repo)
    return repo, _outputs(repo)  # later tests change this repository: keep the first results


def test_repro_writes_every_report_and_they_parse(repo):
    repo, _ = repo
    reports = repo / "reports"
    summary = pd.read_csv(reports / "summary.csv")
    assert sorted(zip(summary["head"], summary.seed, strict=True)) == sorted(
        (h, s) for h in HEADS for s in SEEDS)
    assert (summary.fraction == 1).all() and (summary.train_shift == 0).all()
    assert summary[["train_accuracy", "test_accuracy", "shift_accuracy_mean"]].notna().all().all()
    assert (summary.seconds_per_epoch > 0).all()
    # the tidy table: one row per head x (fraction, train shift) variant x seed
    results = pd.read_csv(reports / "results.csv")
    variants = [(0.5, 0), (1.0, 0), (1.0, 2)]
    assert sorted(zip(results["head"], results.fraction, results.train_shift, results.seed,
                      strict=True)) == sorted((h, f, t, s) for h in HEADS for f, t in variants
                                              for s in SEEDS)
    half = results[results.fraction == 0.5]
    assert half.overfit_gap.notna().all() and half.shift_accuracy_mean.isna().all()
    assert (half.train_images == round(0.5 * results.train_images.max())).all()
    assert results.loc[results.fraction == 1, "shift_accuracy_mean"].notna().all()
    metrics = json.loads((reports / "metrics.json").read_text())
    assert set(metrics) == set(HEADS) and metrics["gap"]["params_head"] == 8 * 10 + 10

    text = (reports / "report.md").read_text()
    for section in ("claims", "## Parameters", "## Accuracy and overfitting",
                    "## Learning curve", "## Translation robustness",
                    "### Training with random shifts", "### Prediction stability",
                    "## Class activation maps", "## Global sum vs global average pooling",
                    "## Training speed", "## Published numbers", "## Provenance"):
        assert section in text
    for claim in ("fewer parameters", "less overfitting", "more translation robust",
                  "faster training", "feature maps tied to classes"):
        assert f"| {claim}" in text
    assert "random shifts up to 2 px" in text and "50% of the training images" in text
    html = (reports / "report.html").read_text()
    assert html.count('src="data:image/png;base64,') == 11 and 'src="figures' not in html

    figures = sorted(p.name for p in (reports / "figures").iterdir())
    assert figures == ["accuracy.png", "cam_overlays.png", "fraction_curve.png", "params.png",
                       "pointing.png", "shift_heatmaps.png", "shift_radius.png",
                       "shift_training.png", "stability.png", "time.png", "training_curves.png"]
    assert figures == sorted(set(re.findall(r"\(figures/(\w+\.png)\)", text)))  # all shown
    for name in figures:
        assert matplotlib.image.imread(reports / "figures" / name).shape[0] > 100

    assert summary.loc[summary["head"] == "dense", "pointing_accuracy"].isna().all()
    assert summary.loc[summary["head"] != "dense", "pointing_accuracy"].between(0, 1).all()
    for head in HEADS:
        has_cam = (reports / "eval" / head / "cam_examples.npz").exists()
        assert has_cam == (head != "dense")
        grid = pd.read_csv(reports / "eval" / head / "shift_grid.csv")
        assert len(grid) == 2 * len(SEEDS) * 5 * 5  # two training shifts on all the data
        assert sorted(p.name for p in (repo / "models" / head).iterdir()) == sorted(
            f"fraction_{f:g}-shift_{t}-seed_{s}.pt" for f, t in variants for s in SEEDS)
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
    assert "reports/train/gap/history/fraction_1-shift_0-seed_1.csv" in plots["data"]


def _training_cell_running(repo: Path) -> bool:
    """Whether some train notebook is executing its training cell right now (papermill
    saves the executed notebook with each cell's status as it goes)."""
    for path in (repo / "reports" / "notebooks").glob("train_*.ipynb"):
        try:
            nb = json.loads(path.read_text())
        except (OSError, ValueError):  # being rewritten this very moment
            continue
        for cell in nb["cells"]:
            if ("train_one_seed(" in "".join(cell["source"])
                    and cell["metadata"].get("papermill", {}).get("status") == "running"):
                return True
    return False


RESUMED_HEADS = ["gap"]  # one head keeps this second repository's runs short


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A one-head repository whose first `dvc repro` was stopped by Ctrl-C in the middle of
    training and then run again, with its outputs as they were right after that rerun."""
    second = _tiny_repository(tmp_path_factory.mktemp("interrupted"), RESUMED_HEADS)
    # A shell that starts the test suite in the background makes its children ignore SIGINT,
    # and an ignored SIGINT is inherited: restore the terminal's default, as in `make repro`.
    process = subprocess.Popen(["dvc", "repro"], cwd=second, env=_env(), start_new_session=True,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 240
    while not _training_cell_running(second) and process.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C in the terminal does
    assert process.wait(timeout=120) != 0, "dvc repro finished before it could be interrupted"

    _run(["dvc", "repro"], second)  # picks up where it stopped
    assert "up to date" in _run(["dvc", "status"], second).stdout
    return second, _outputs(second)  # later tests change this repository: keep these results


def test_interrupted_repro_resumes_to_byte_identical_results(repo, resumed):
    _, uninterrupted = repo
    _, outputs = resumed
    assert len(outputs) == len(RESUMED_HEADS) * (3 * len(SEEDS) + 1)  # 3 variants x seeds,
    # and metrics.csv; the same bytes as the run that was never stopped
    assert outputs == {k: v for k, v in uninterrupted.items()
                       if k.split("/")[-2] in RESUMED_HEADS}


def test_changing_an_evaluation_param_reruns_only_evaluate_and_report(resumed):
    repo, _ = resumed
    _run(["dvc", "repro"], repo)  # up to date again whatever ran here before
    result = _run(["dvc", "exp", "run", "-S", "evaluate.max_shift=1"], repo)
    ran = {line.split("'")[1] for line in result.stdout.splitlines()
           if line.startswith("Running stage")}
    assert ran == {f"evaluate@{h}" for h in RESUMED_HEADS} | {"report"}
    grid = pd.read_csv(repo / "reports" / "eval" / "gap" / "shift_grid.csv")
    assert len(grid) == 2 * len(SEEDS) * 3 * 3


def test_a_notebook_error_fails_its_stage_shows_the_error_and_keeps_the_notebook(resumed):
    repo, _ = resumed
    params_file = repo / "params.yaml"
    original = params_file.read_text()
    params = yaml.safe_load(original)
    params["device"] = "cuda:7"  # not on this machine (nor on a 1-GPU one)
    params_file.write_text(yaml.safe_dump(params, sort_keys=False))
    try:
        failed = _run(["dvc", "repro", "train@gap"], repo, check=False)
    finally:
        params_file.write_text(original)
    assert failed.returncode != 0
    shown = failed.stdout + failed.stderr
    assert "notebooks/train.ipynb failed in cell" in shown and "cuda:7" in shown
    executed = nbformat.read(repo / "reports" / "notebooks" / "train_gap.ipynb", as_version=4)
    assert any(o.get("output_type") == "error"
               for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert not (repo / "models" / "gap").exists()  # nothing half-written for the next stage


def test_prepare_stage_reads_real_format_data_sets_from_data_root(tmp_path_factory):
    from test_datasets import md5_hash, small_cifar_tarball, small_idx_files

    from gap_study.datasets import CIFAR10_TARBALL, HASH_OVERRIDES_ENV

    repo = _tiny_repository(tmp_path_factory.mktemp("datasets"), ["gap"])
    mnist = small_idx_files(n_train=30, n_test=10)
    cifar, _, _ = small_cifar_tarball()
    hashes = {"mnist": {name: md5_hash(data) for name, data in mnist.items()},
              "cifar10": {CIFAR10_TARBALL: md5_hash(cifar)}}
    for name, files in [("mnist", mnist), ("cifar10", {CIFAR10_TARBALL: cifar})]:
        for filename, data in files.items():
            (repo / "seeded" / name).mkdir(parents=True, exist_ok=True)
            (repo / "seeded" / name / filename).write_bytes(data)
    (repo / "hashes.json").write_text(json.dumps(hashes))
    env = {HASH_OVERRIDES_ENV: str(repo / "hashes.json")}

    def prepare(name, **data):
        params = yaml.safe_load((repo / "params.yaml").read_text())
        params["data"].update(name=name, root="seeded", download=False, **data)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        return _run(["dvc", "repro", "prepare"], repo, check=False, **env)

    assert prepare("mnist", max_train=20).returncode == 0
    with np.load(repo / "data" / "prepared" / "dataset.npz", allow_pickle=False) as npz:
        assert npz["x_train"].shape == (20, 1, 44, 44) and npz["x_test"].shape == (10, 1, 44, 44)
        assert str(npz["name"]) == "mnist"
    assert prepare("cifar10", max_train=None).returncode == 0
    with np.load(repo / "data" / "prepared" / "dataset.npz", allow_pickle=False) as npz:
        assert npz["x_train"].shape[1:] == (3, 48, 48)

    # nothing in data.root and no downloads allowed: the stage fails saying what to put where
    failed = prepare("fashion_mnist")
    assert failed.returncode != 0
    shown = failed.stdout + failed.stderr
    assert "DatasetError" in shown and str(repo / "seeded" / "fashion_mnist") in shown
    assert "md5:8d4fb7e6c68d591d4c3dfef9ec88bf0d" in shown


def test_a_queued_sweep_runs_in_parallel_and_pools_seeds_across_experiments(tmp_path):
    repo = _tiny_repository(tmp_path / "sweep", ["gap"])
    for seed in SEEDS:  # one experiment per seed: the seeds of one study, run in parallel
        _run(["dvc", "exp", "run", "--queue", "-S", f"train.seeds=[{seed}]"], repo)
    # The workers outlive `dvc queue start` and inherit its output: to a file, not to a pipe
    # that `subprocess.run` would wait on until the last worker exits.
    with (tmp_path / "queue.log").open("w") as log:
        subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=_env(), stdout=log,
                       stderr=subprocess.STDOUT, check=True)
    try:
        deadline, status = time.monotonic() + 420, ""
        while time.monotonic() < deadline:
            # `dvc queue status` can fail while a worker rewrites the file it reads: ask again
            shown = _run(["dvc", "queue", "status"], repo, check=False)
            if shown.returncode == 0:
                status = shown.stdout
                if "Queued" not in status and "Running" not in status:
                    break
            time.sleep(2)
    finally:
        _run(["dvc", "queue", "stop"], repo, check=False)  # no worker left behind
    assert status.count("Success") == len(SEEDS), status

    result = _run([sys.executable, "-m", "gap_study.sweep"], repo)
    assert "## digits (2 seeds)" in result.stdout
    pooled = pd.read_csv(repo / "reports" / "sweep" / "results.csv")
    assert pooled.experiment.nunique() == len(SEEDS) and sorted(pooled.seed.unique()) == SEEDS
    assert len(pooled) == 3 * len(SEEDS)  # three variants per seed, each once
    summary = pd.read_csv(repo / "reports" / "sweep" / "summary.csv")
    assert (summary.n == len(SEEDS)).all()
