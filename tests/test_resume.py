"""A stage killed midway resumes where it stopped: in a tiny study, the train stage is killed
(SIGKILL, DVC, the stage runner and its kernel at once) after its first runs were kept; run
again, it trains only the runs it lacks, and its outputs are byte-identical to those of an
uninterrupted run (gap_study.pipeline.kept)."""

import json
import subprocess
import time
from io import StringIO
from pathlib import Path

import pandas as pd
import psutil
import pytest
from builders import command_env, run_command, tiny_repository

pytestmark = pytest.mark.slow

HEADS = ["dense", "gap"]
SEEDS = [0, 1, 2]
RUNS = len(HEADS) * len(SEEDS) * 3  # fractions 0.5 and 1, training shifts 0 and 2
TIMINGS = ["epoch_seconds", "images_per_second"]  # measured, never the same twice


def _train_outputs(repo: Path) -> dict[str, object]:
    """The train stage's outputs: checkpoint bytes, histories without their timings, and the
    checkpoints' SHA-256 in its run record."""
    outputs: dict[str, object] = {
        path.relative_to(repo).as_posix(): path.read_bytes()
        for path in sorted((repo / "models").glob("*/*.pt"))}
    for path in sorted((repo / "reports" / "train" / "history").glob("*/*.csv")):
        history = pd.read_csv(StringIO(path.read_text())).drop(columns=TIMINGS)
        outputs[path.relative_to(repo).as_posix()] = history.to_csv(index=False)
    record = json.loads((repo / "reports" / "train" / "run.json").read_text())
    outputs["checkpoints"] = record["checkpoints"]
    return outputs


def _kept(folder: Path) -> int:
    """Runs kept so far: those whose record (written last) is there."""
    return len(list(folder.glob("*/record.json")))


def _kill_all(pid: int) -> None:
    """SIGKILL a process and every process under it (the kernel runs in a session of its
    own, so a process group would miss it). The root (DVC) dies first: were a child killed
    first, DVC could see its stage fail and be killed halfway through rewriting
    `.dvc/tmp/rwlock`, a corrupt lock no real crash of the stage leaves behind."""
    root = psutil.Process(pid)
    processes = [root, *root.children(recursive=True)]
    for process in processes:
        try:
            process.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=60)


def test_a_killed_train_stage_trains_only_the_runs_it_lacks_and_gives_the_same_bytes(tmp_path):
    repo = tiny_repository(tmp_path / "repo", HEADS, compute={"scheduler": "synchronous"},
                           train={"seeds": SEEDS})
    run_command(["dvc", "repro", "train"], repo)
    clean = _train_outputs(repo)
    kept = repo / ".gap_study" / "runs" / "train"
    assert not kept.exists()  # emptied once the stage wrote its outputs

    with (tmp_path / "killed.log").open("w") as log:
        stage = subprocess.Popen(["dvc", "repro", "--force", "--single-item", "train"],
                                 cwd=repo, env=command_env(), stdout=log,
                                 stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while _kept(kept) < 2 and stage.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        _kill_all(stage.pid)
    done = _kept(kept)
    assert 2 <= done < RUNS, (tmp_path / "killed.log").read_text()[-3000:]
    assert not (repo / "models").exists()  # DVC removed the outputs; the kept runs remain

    resumed = run_command(["dvc", "repro", "--force", "--single-item", "train"], repo).stdout
    assert f"train: {done} of {RUNS} runs reused" in resumed
    trained = [line for line in resumed.splitlines()
               if line.startswith("train: ") and " done (" in line]
    assert len(trained) == RUNS - done
    assert _train_outputs(repo) == clean
    assert not kept.exists()
