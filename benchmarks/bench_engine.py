"""Where runs compute, on the whole study: every stage of the pipeline under each compute
setting (``compute`` in ``params.yaml``), the settings taking turns stage by stage.

Each setting runs in its own copy of the project (the files git would commit, nothing
generated), so a stage reads what the previous stage of the same setting wrote; the stages
run the commands of ``dvc.yaml`` without DVC, whose own cost is the same for every setting.
The default compares the study before the engine, every run in the stage's process on all of
torch's threads (``synchronous``), with the default local cluster of single-threaded workers.

    python benchmarks/bench_engine.py            # the default study twice: about 20 min on 2 cores
    python benchmarks/bench_engine.py --quick    # a tiny study: about 3 minutes
    python benchmarks/bench_engine.py --setting local,1,1 --setting local,1,2 --setting local,1,4

A setting is ``SCHEDULER,THREADS_PER_RUN[,WORKERS]``. With several rounds the order of the
settings reverses every other round and each stage keeps its best round. Nothing else should
run meanwhile: whole stages take minutes, and this script cannot tell other processes' load
from its own workers'.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import torch
import yaml
from _common import describe_machine, print_table

from gap_study.pipeline.engine import local_workers
from gap_study.pipeline.params import ComputeParams, read_yaml
from gap_study.pipeline.runtime import resolve_device
from gap_study.pipeline.workspace import copy_project
from gap_study.stages.speed import alternate

ROOT = Path(__file__).resolve().parents[1]
# a study of a few seconds per stage that still runs every stage's code (as the tests' tiny one)
QUICK = {"heads": ["dense", "gap"],
         "data": {"max_train": 400, "max_test": 150, "two_objects": 40},
         "model": {"widths": [8, 16]},
         "train": {"seeds": [0, 1], "epochs": 2, "fractions": [0.5, 1.0]},
         "tune": {"learning_rates": [0.001, 0.01], "lr_min": 0.001, "lr_max": 0.01},
         "evaluate": {"max_shift": 2},
         "mechanism": {"heads": ["gap"], "test_images": 30},
         "speed": {"rounds": 3, "blocks": 2}}


def parse_setting(text: str) -> dict[str, object]:
    """``SCHEDULER,THREADS[,WORKERS]`` -> a ``compute`` section."""
    scheduler, threads, *workers = text.split(",")
    if len(workers) > 1:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SCHEDULER,THREADS[,WORKERS]")
    return {"scheduler": scheduler, "threads_per_run": int(threads),
            "workers": int(workers[0]) if workers else None}


def label(compute: dict[str, object]) -> str:
    threads = f"{compute['threads_per_run']} thread(s)"
    if compute["scheduler"] == "synchronous":
        return f"in-process, {threads}"
    if compute["scheduler"] != "local":
        return f"{compute['scheduler']}, {threads} per run"
    return f"local cluster, {local_workers(ComputeParams(**compute))} worker(s) x {threads}"


def make_copy(target: Path, compute: dict[str, object], device: str, quick: bool) -> None:
    """The project's files in ``target``, its ``params.yaml`` with ``compute`` and ``device``
    (and the tiny study with ``quick``); the download cache is shared, not copied."""
    copy_project(ROOT, target)
    params = read_yaml((target / "params.yaml").read_text())
    cache = ROOT / params["data"]["root"]
    if cache.is_dir():
        (target / params["data"]["root"]).parent.mkdir(parents=True, exist_ok=True)
        (target / params["data"]["root"]).symlink_to(cache.resolve())
    for section, values in (QUICK.items() if quick else ()):
        params[section] = values if isinstance(values, list) else {**params[section], **values}
    params.update(compute=compute, device=device)
    (target / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def stage_commands() -> dict[str, list[str]]:
    """Each stage's command from ``dvc.yaml``, in the file's (the pipeline's) order, run by
    this interpreter."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = {}
    for name, stage in stages.items():
        args = shlex.split(stage["cmd"])
        commands[name] = [sys.executable, *args[1:]] if args[0] == "python" else args
    return commands


def run_stage(command: list[str], copy: Path, log: Path) -> float | None:
    """Seconds ``command`` took in ``copy``, or ``None`` when it failed (its output in
    ``log``)."""
    start = time.perf_counter()
    with log.open("a") as out:
        failed = subprocess.run(command, cwd=copy, stdout=out, stderr=subprocess.STDOUT).returncode
    return None if failed else time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setting", action="append", type=parse_setting, default=None,
                        help="SCHEDULER,THREADS_PER_RUN[,WORKERS]; repeat to compare (default: "
                             "synchronous on torch's threads, then local,1)")
    parser.add_argument("--rounds", type=int, default=1, help="whole studies per setting")
    parser.add_argument("--quick", action="store_true", help="a tiny study: a smoke run")
    parser.add_argument("--device", default="auto",
                        help="the study's device: auto (CUDA when present), cpu, cuda, ...")
    args = parser.parse_args()
    settings = args.setting or [parse_setting(f"synchronous,{torch.get_num_threads()}"),
                                parse_setting("local,1")]
    names = [label(compute) for compute in settings]
    print(describe_machine(resolve_device(args.device)))
    print(f"{'tiny' if args.quick else 'default'} study, {args.rounds} round(s); settings: "
          + "; ".join(f"({i}) {name}" for i, name in enumerate(names, start=1)) + "\n")
    commands = stage_commands()
    seconds: dict[str, dict[str, list[float]]] = {n: {s: [] for s in commands} for n in names}
    with tempfile.TemporaryDirectory(prefix="bench_engine_") as scratch:
        for r in range(args.rounds):
            copies = {}
            for i, (name, compute) in enumerate(zip(names, settings, strict=True)):
                copies[name] = Path(scratch, f"round{r}-setting{i}")
                make_copy(copies[name], compute, args.device, args.quick)
            for stage, command in commands.items():
                for name in alternate(names, r):
                    log = copies[name] / "bench_engine.log"
                    taken = run_stage(command, copies[name], log)
                    if taken is None:
                        print(f"stage {stage} failed under {name}; its output ends:\n"
                              + "\n".join(log.read_text().splitlines()[-20:]))
                        return
                    seconds[name][stage].append(taken)
            for copy in copies.values():
                shutil.rmtree(copy)
    best = pd.DataFrame({name: {stage: min(times) for stage, times in by_stage.items()}
                         for name, by_stage in seconds.items()})
    best.loc["total"] = best.sum()
    table = best.set_axis([f"({i}) s" for i in range(1, len(names) + 1)], axis=1)
    for i, name in enumerate(names[1:], start=2):
        table[f"speed-up ({i}) vs (1)"] = best[names[0]] / best[name]
    print_table(table.reset_index(names="stage"), floatfmt=".2f")
    total = best.loc["total"]
    print("\nVERDICT: " + "; ".join(f"{name} ran the study {total[names[0]] / total[name]:.2f}x "
                                    f"as fast as {names[0]}" for name in names[1:]))


if __name__ == "__main__":
    main()
