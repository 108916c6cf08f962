"""scaling/slurm_cluster.py: the SLURM job it would submit (nothing is submitted here)."""

import importlib.util
import re
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scaling" / "slurm_cluster.py"


@pytest.fixture(scope="module")
def slurm_cluster():
    spec = importlib.util.spec_from_file_location("slurm_cluster", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_job_holds_one_single_threaded_worker_per_run_and_the_resources_asked(slurm_cluster):
    args = slurm_cluster.parse_args(["--jobs", "2", "--cores", "4", "--memory", "8GB",
                                     "--threads-per-run", "2", "--queue", "gpu", "--gpus", "1",
                                     "--walltime", "00:30:00", "--port", "0",
                                     "--dashboard-port", "0"])
    cluster = slurm_cluster.make_cluster(args)
    try:
        script = cluster.job_script()
        dashboard = cluster.dashboard_link
    finally:
        cluster.close()
    assert "#SBATCH --cpus-per-task=4" in script and "#SBATCH -p gpu" in script
    assert "#SBATCH -t 00:30:00" in script and "#SBATCH --gres=gpu:1" in script
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nworkers 2" in worker  # 4 cores / 2 threads per run
    assert re.findall(r"--nthreads (\d+)", worker)[-1] == "1"  # the last one counts
    assert f"export {slurm_cluster.NO_TRIM}=None" in script  # glibc keeps its heap
    assert ":8787/" not in dashboard  # any free port, as asked


def test_cores_that_threads_per_run_do_not_divide_are_refused(slurm_cluster, capsys):
    with pytest.raises(SystemExit):
        slurm_cluster.parse_args(["--jobs", "1", "--cores", "3", "--memory", "4GB",
                                  "--threads-per-run", "2"])
    assert "--cores 3 is not a multiple of --threads-per-run 2" in capsys.readouterr().err
