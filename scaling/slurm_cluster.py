"""Start a Dask cluster on SLURM for the study's runs and print its scheduler's address.

    pip install -e ".[cluster]"          # dask-jobqueue
    python scaling/slurm_cluster.py --jobs 8 --cores 4 --memory 16GB --walltime 02:00:00 \\
        --queue normal
    # prints tcp://10.1.2.3:8786; in another shell, from the project folder:
    dvc exp run -S compute.scheduler=tcp://10.1.2.3:8786 -S 'train.seeds=[0,1,2,...,19]'

Each SLURM job runs ``cores / threads-per-run`` single-threaded Dask workers (one training or
evaluation run each at a time); ``--threads-per-run`` must equal ``compute.threads_per_run``.
The cluster lives until this script is stopped (Ctrl-C), which cancels its jobs. The
scheduler runs here, so start the script on a node the compute nodes can reach (a login
node), with the project's environment installed on both.
"""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

NO_TRIM = "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, required=True, help="SLURM jobs to start")
    parser.add_argument("--cores", type=int, required=True, help="cores per job")
    parser.add_argument("--memory", required=True, help="memory per job, e.g. 16GB")
    parser.add_argument("--walltime", default="02:00:00", help="per job, HH:MM:SS")
    parser.add_argument("--queue", default=None, help="SLURM partition")
    parser.add_argument("--account", default=None, help="SLURM account")
    parser.add_argument("--threads-per-run", type=int, default=1,
                        help="torch threads per run: compute.threads_per_run (default 1)")
    parser.add_argument("--port", type=int, default=8786, help="the scheduler's port")
    parser.add_argument("--dashboard-port", type=int, default=8787,
                        help="the scheduler's dashboard port; 0: any free one")
    parser.add_argument("--gpus", type=int, default=0,
                        help="GPUs per job (adds --gres=gpu:N); then runs use CUDA")
    args = parser.parse_args(argv)
    if args.cores % args.threads_per_run:
        parser.error(f"--cores {args.cores} is not a multiple of --threads-per-run "
                     f"{args.threads_per_run}")
    return args


def make_cluster(args: argparse.Namespace) -> Any:
    """A ``dask_jobqueue.SLURMCluster`` for ``args``, no job submitted yet."""
    from dask_jobqueue import SLURMCluster

    extra = [f"--gres=gpu:{args.gpus}"] if args.gpus else []
    return SLURMCluster(
        cores=args.cores, processes=args.cores // args.threads_per_run, memory=args.memory,
        walltime=args.walltime, queue=args.queue, account=args.account,
        job_extra_directives=extra,
        scheduler_options={"port": args.port, "dashboard_address": f":{args.dashboard_port}"},
        # one run at a time per worker; a run's own threads are set by the study
        worker_extra_args=["--nthreads", "1"],
        # Dask's default MALLOC_TRIM_THRESHOLD_ slows training steps several times over
        job_script_prologue=[f"export {NO_TRIM}=None"])


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cluster = make_cluster(args)
    cluster.scale(jobs=args.jobs)
    print(cluster.scheduler_address, flush=True)
    print(f"{args.jobs} jobs submitted; set compute.scheduler to the address above. "
          "Ctrl-C stops the cluster.", file=sys.stderr, flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
