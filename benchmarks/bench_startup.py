"""What a stage spends before and after its runs, and what one cluster shared by the stages of
a ``dvc repro`` would save.

Four Dask stages (tune, train, evaluate, mechanism) each open the engine of ``params.yaml``'s
``compute`` (``gap_study.pipeline.engine.open_engine``): a local cluster started, its workers
importing the stage's code, the cluster stopped. The script times, in alternating rounds:

- ``own cluster``: that whole cycle, as a stage pays it today;
- ``shared cluster``: connecting to a cluster that is already running, whose workers have
  imported the code before, and closing the client: what a stage would pay if the first stage
  of a ``dvc repro`` started the cluster and the others found it;
- ``kernel``: papermill executing a one-cell notebook that imports the stage's code: the
  start-up every notebook stage pays before its first line (kernel, papermill, imports).

Then the saving of a shared cluster over the default study, next to the study's last measured
time (the executed notebooks' papermill durations in ``reports/notebooks/``).

    python benchmarks/bench_startup.py           # 5 rounds: about 1 minute
    python benchmarks/bench_startup.py --quick   # 2 rounds
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import nbformat
import pandas as pd
from _common import parse_args, print_table, setup
from bench_limit import measured_seconds

from gap_study.pipeline.engine import local_workers, open_engine
from gap_study.pipeline.params import load_params
from gap_study.pipeline.paths import Layout
from gap_study.pipeline.run_notebook import IpcKernelManager

ROOT = Path(__file__).resolve().parents[1]
DASK_STAGES = ("tune", "train", "evaluate", "mechanism")
STAGE_CODE = "gap_study.stages.train"  # what a worker imports before its first run


def _import_stage_code() -> bool:
    import importlib

    importlib.import_module(STAGE_CODE)
    return True


def own_cluster(compute) -> None:
    with open_engine(compute) as engine:
        engine.client.run(_import_stage_code)


def shared_cluster(address: str) -> None:
    from distributed import Client

    with Client(address, timeout="10s") as client:
        client.run(_import_stage_code)


def kernel(notebook: Path) -> None:
    import papermill

    papermill.execute_notebook(str(notebook), str(notebook.with_suffix(".out.ipynb")),
                               kernel_name="python3", progress_bar=False, cwd=str(ROOT),
                               extra_arguments=["--IPKernelApp.log_level=CRITICAL"],
                               kernel_manager_class=IpcKernelManager)  # as the stages run


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    setup(args)
    params = load_params(ROOT / "params.yaml")
    compute = params.compute
    if compute.scheduler != "local":
        raise SystemExit(f"compute.scheduler is {compute.scheduler!r}: this script measures "
                         "the local cluster's start-up; set it to local")
    rounds = 2 if args.quick else 5
    from distributed import LocalCluster

    with tempfile.TemporaryDirectory() as folder, \
            LocalCluster(n_workers=local_workers(compute), threads_per_worker=1,
                         processes=True, host="127.0.0.1", dashboard_address=None) as running:
        notebook = Path(folder) / "startup.ipynb"
        nbformat.write(nbformat.v4.new_notebook(
            cells=[nbformat.v4.new_code_cell(f"import {STAGE_CODE}")]), notebook)
        shared_cluster(running.scheduler_address)  # its workers import the code once, first
        cases = {"own cluster": lambda: own_cluster(compute),
                 "shared cluster": lambda: shared_cluster(running.scheduler_address),
                 "kernel": lambda: kernel(notebook)}
        times: dict[str, list[float]] = {name: [] for name in cases}
        for round_ in range(rounds):
            for name in (list(cases) if round_ % 2 == 0 else list(cases)[::-1]):
                start = time.perf_counter()
                cases[name]()
                times[name].append(time.perf_counter() - start)

    best = {name: min(values) for name, values in times.items()}
    rows = [{"start-up": name, "best s": best[name], "median s": statistics.median(values),
             "rounds": len(values)} for name, values in times.items()]
    print_table(pd.DataFrame(rows), floatfmt=".2f")

    stages = measured_seconds(Layout(ROOT))  # notebook stages of the last run: their times
    study = sum(stages.values())
    saved = len(DASK_STAGES) * (best["own cluster"] - best["shared cluster"])
    print()
    print_table(pd.DataFrame([{
        "Dask stages": len(DASK_STAGES),
        "saved by one shared cluster, s": saved,
        "notebook stages": len(stages),
        "their kernel start-ups, s": len(stages) * best["kernel"],
        "last study, s": study,
        "saved / study": saved / study if study else float("nan")}]), floatfmt=".3g")


if __name__ == "__main__":
    main()
