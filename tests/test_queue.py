"""A sweep on DVC's experiment queue: experiments run in parallel, then one report pools them.

Marked ``queue`` (and ``slow``): it starts DVC's queue workers, which take a minute or two;
CI runs it with the rest (``pytest -m "not queue"`` leaves it out).
"""

import re
import subprocess
import sys
import time

import pandas as pd
import pytest
from builders import TINY_SEEDS, command_env, run_command, tiny_repository

pytestmark = [pytest.mark.slow, pytest.mark.queue]


def test_a_queued_sweep_runs_in_parallel_and_pools_seeds_across_experiments(tmp_path):
    # two experiments at a time on 2 cores, each computing in its stages' own processes (a
    # local cluster would add four start-ups to each; test_pipeline.py runs one). One training
    # variant and two mechanism cells: what is pooled is the same whatever the study holds.
    # a rate too small to move the weights: the sweep must name gap as untrained
    repo = tiny_repository(tmp_path / "sweep", ["gap"], compute={"scheduler": "synchronous"},
                           tune={"learning_rates": [1e-7], "lr_min": 1e-7, "lr_max": 1e-7},
                           train={"fractions": [1.0], "shift": [0]},
                           mechanism={"downsample": ["max"], "padding": ["zeros", "circular"],
                                      "train_shift": None})
    for seed in TINY_SEEDS:  # one experiment per seed: the seeds of one study, run in parallel
        run_command(["dvc", "exp", "run", "--queue", "-S", f"train.seeds=[{seed}]"], repo)
    # The workers outlive `dvc queue start` and inherit its output: to a file, not to a pipe
    # that `subprocess.run` would wait on until the last worker exits.
    with (tmp_path / "queue.log").open("w") as log:
        subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=repo, env=command_env(),
                       stdout=log, stderr=subprocess.STDOUT, check=True)
    try:
        deadline, status = time.monotonic() + 420, ""
        while time.monotonic() < deadline:
            # `dvc queue status` can fail while a worker rewrites the file it reads: ask again
            shown = run_command(["dvc", "queue", "status"], repo, check=False)
            if shown.returncode == 0:
                status = shown.stdout
                if "Queued" not in status and "Running" not in status:
                    break
            time.sleep(10)  # each `dvc queue status` takes a second of CPU
    finally:
        run_command(["dvc", "queue", "stop"], repo, check=False)  # no worker left behind
    assert status.count("Success") == len(TINY_SEEDS), status

    result = run_command([sys.executable, "-m", "gap_study.sweep"], repo)
    assert "## digits (2 seeds)" in result.stdout
    assert re.search(r"\*\*Untrained: `gap` \(experiments [\w-]+, [\w-]+\)\.\*\*", result.stdout)
    pooled = pd.read_csv(repo / "reports" / "sweep" / "results.csv")
    assert pooled.untrained.all()
    assert pooled.experiment.nunique() == len(TINY_SEEDS)
    assert sorted(pooled.seed.unique()) == TINY_SEEDS
    assert (pooled.part == "main").sum() == len(TINY_SEEDS)  # one variant per seed, once
    assert (pooled.part == "mechanism").sum() == 2 * len(TINY_SEEDS)  # gap in two cells
    summary = pd.read_csv(repo / "reports" / "sweep" / "summary.csv")
    assert (summary.n == len(TINY_SEEDS)).all()
