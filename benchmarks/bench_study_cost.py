"""What a variant of the study costs, stage by stage, predicted from a few timed units.

Times, on one thread (what each Dask task gets), the units the stages are made of, on the
default study (``params.yaml``) and on a variant (``--set KEY=VALUE``, as ``dvc exp run -S``
takes them): one training step of every head (and of ``mechanism.heads`` in every
downsample x padding cell; the shift-trained cell, if any, costs the main runs' steps), a main
run's evaluation (``evaluate_run``: shift grid, pointing,
two-object canvases; for ``dense``, ``gap`` and ``linear``, which stand for the heads without
a class map and a heavy head, with a map, and without a map and a light head), a learning-curve
run's evaluation, and one mechanism grid. Each stage's units are counted from the settings
(runs x epochs x steps per epoch), summed and shared by the local cluster's workers. The ratio
variant / default, per stage, applied to the default study's measured stage times (the
papermill durations of the executed notebooks in ``--stage-times``, a folder, or a JSON file
of seconds by stage), is the prediction: it
carries over what the units leave out (Dask's start, the validation passes, the report).

    python benchmarks/bench_study_cost.py --stage-times reports/notebooks \\
        --set data.name=mnist_5k --set train.epochs=5

Every unit is timed in CPU seconds of this process (``time.process_time``), not wall-clock:
on a machine whose cores other work shares, that counts this process's work and little of
the others'. Untrained models are timed: a forward pass costs the same whatever the weights.
Tuning is counted at its starting grid (rates x seeds runs per head) plus the default study's
share of extensions. About 2 minutes for a 40-pixel variant on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from _common import PARAMS_FILE, print_table, settle_allocator, watch_contention

from gap_study.data.prepare import prepare_study_dataset
from gap_study.data.splits import steps_per_epoch
from gap_study.measures.metrics import shift_grid_predictions
from gap_study.nets.models import build_model, fold_batch_norm
from gap_study.pipeline.params import Params, parse_params, read_yaml
from gap_study.pipeline.paths import RunId
from gap_study.pipeline.runtime import torch_threads
from gap_study.stages.evaluate import EvaluationData, evaluate_run
from gap_study.stages.mechanism import Cell
from gap_study.stages.speed import training_step

ROOT = PARAMS_FILE.parent
EVAL_HEADS = {"dense": "dense", "dense_dropout": "dense", "linear": "linear",
              "gap_hidden": "linear", "gap": "gap", "gmp": "gap"}  # timed head per head
TUNE_EXTENSION = 42 / 36  # the default study's tune stage ran 42 runs for its 36 at the start


def settings(overrides: list[str]) -> Params:
    """``params.yaml`` with ``KEY=VALUE`` overrides (values read as YAML, as DVC's ``-S``
    reads them), validated."""
    raw = read_yaml(PARAMS_FILE.read_text())
    for item in overrides:
        key, value = item.split("=", 1)
        *path, last = key.split(".")
        section = raw
        for part in path:
            section = section[part]
        section[last] = read_yaml(value)
    return parse_params(raw)


def cpu_seconds(fn: Callable[[], object], calls: int = 1) -> float:
    """CPU seconds of one call of ``fn`` (the mean over ``calls``), in this process: on one
    thread the work itself, which other processes sharing the cores inflate far less than
    the wall-clock time (they take turns on the cores; the CPU time counts this one's)."""
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls


def step_seconds(fn: Callable[[], object], calls: int) -> float:
    fn()  # warm-up
    return min(cpu_seconds(fn, calls) for _ in range(3))


def unit_costs(params: Params) -> dict[str, float]:
    """Seconds of every unit on one thread, keyed ``step/<head>[/<cell>]``,
    ``evaluate/<head>``, ``evaluate_curve``, ``mechanism_grid``."""
    data = prepare_study_dataset(params.data, ROOT)
    device = torch.device("cpu")
    costs: dict[str, float] = {}
    cells = [Cell(d, p) for d in params.mechanism.downsample for p in params.mechanism.padding]
    jobs = [(head, Cell(params.model.downsample, params.model.padding)) for head in params.heads]
    jobs += [(head, cell) for cell in cells[1:] for head in params.mechanism.heads]
    for head, cell in jobs:
        step = training_step(cell.model(params.model).to_config(head, data), data,
                             batch_size=params.train.batch_size, lr=1e-3, seed=0,
                             device=device, schedule=params.train.schedule,
                             weight_decay=params.train.weight_decay)
        costs[f"step/{head}/{cell.name}"] = step_seconds(step, 4)
    evaluation = EvaluationData.on(data, device)
    full = RunId(params.train.full_fraction, params.train.base_shift, 0)
    for head in sorted(set(EVAL_HEADS.values())):
        model = build_model(params.model.to_config(head, data)).eval()
        costs[f"evaluate/{head}"] = cpu_seconds(partial(
            evaluate_run, model, full, evaluation, params.evaluate,
            full_fraction=params.train.full_fraction))
    curve = RunId(min(params.train.fractions), 0, 0)
    costs["evaluate_curve"] = cpu_seconds(partial(
        evaluate_run, model, curve, evaluation, params.evaluate,
        full_fraction=params.train.full_fraction))
    images = evaluation.x_test[:params.mechanism.test_images or len(evaluation.x_test)]
    costs["mechanism_grid"] = cpu_seconds(partial(
        shift_grid_predictions, fold_batch_norm(model), images, params.evaluate.max_shift,
        params.evaluate.batch_size))
    costs["train_images"] = len(data.y_train)
    return costs


def stage_work(params: Params, costs: dict[str, float]) -> dict[str, float]:
    """Seconds of one thread's work per stage, from the units and the settings."""
    train, own = params.train, f"{params.model.downsample}-{params.model.padding}"
    steps = train.epochs * steps_per_epoch(int(costs["train_images"]), train.batch_size,
                                           train.drop_last)
    run = {head: steps * costs[f"step/{head}/{own}"] for head in params.heads}
    tune_runs = len(params.tune.learning_rates) * len(params.tune.seeds) * TUNE_EXTENSION
    evaluate = sum(costs[f"evaluate/{EVAL_HEADS.get(head, 'dense')}"] for head in params.heads)
    curve_runs = len(train.runs()) // len(train.seeds) - 1  # runs a head-seed, the main one out
    cells = [k for k in costs if k.startswith("step/") and not k.endswith(own)]
    # the shift-trained cell (mechanism.train_shift): the model section's backbone, trained
    # here unless the train stage's augmentation ablation has the shift; scored either way
    shift = params.mechanism.train_shift
    shifted = shift is not None and shift not in train.shift
    grids = (len(params.mechanism.downsample) * len(params.mechanism.padding)
             + (shift is not None)) * len(params.mechanism.heads)
    speed = params.speed
    speed_steps = speed.rounds * speed.blocks * speed.steps + speed.warmup
    return {
        "tune": tune_runs * sum(run.values()),
        "train": len(train.runs()) * sum(run.values()),
        "evaluate": len(train.seeds) * (evaluate + curve_runs * len(params.heads)
                                        * costs["evaluate_curve"]),
        "mechanism": len(train.seeds) * (
            sum(steps * costs[k] for k in cells)
            + shifted * sum(run[head] for head in params.mechanism.heads)
            + grids * costs["mechanism_grid"]),
        "speed": speed_steps * sum(costs[f"step/{h}/{own}"] for h in params.heads),
    }


def measured_stage_times(source: Path) -> dict[str, float]:
    """Seconds of each stage's notebook, from papermill's record in its executed copy in the
    folder ``source``, or from a JSON file ``{"<stage>": seconds}``."""
    if source.is_file():
        return {str(k): float(v) for k, v in json.loads(source.read_text()).items()}
    names = {"prepare_data": "prepare"}
    times = {}
    for path in sorted(source.glob("*.ipynb")):
        meta = json.loads(path.read_text()).get("metadata", {}).get("papermill", {})
        if meta.get("duration"):
            times[names.get(path.stem, path.stem)] = float(meta["duration"])
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--stage-times", type=Path, default=ROOT / "reports" / "notebooks")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    settle_allocator()
    base, variant = settings([]), settings(args.set)
    with watch_contention(), torch_threads(1):
        units = {"default": unit_costs(base), "variant": unit_costs(variant)}
    print_table(pd.DataFrame(units).rename_axis("unit").reset_index(), floatfmt=".4g")
    measured = measured_stage_times(args.stage_times)
    work = {name: stage_work(p, units[name]) for name, p in
            (("default", base), ("variant", variant))}
    rows: list[dict[str, Any]] = []
    for stage in ("prepare", "tune", "train", "evaluate", "mechanism", "speed", "report"):
        ratio = (work["variant"][stage] / work["default"][stage]
                 if stage in work["default"] else math.nan)
        seen = measured.get(stage, math.nan)
        predicted = seen * ratio if stage in work["default"] else seen
        workers = 1 if stage == "speed" else args.workers
        rows.append({"stage": stage, "default_work_s": work["default"].get(stage, math.nan),
                     "variant_work_s": work["variant"].get(stage, math.nan), "ratio": ratio,
                     "default_measured_s": seen, "variant_predicted_s": predicted,
                     "variant_work_per_worker_s": work["variant"].get(stage, math.nan)
                     / workers})
    table = pd.DataFrame(rows)
    print_table(table, floatfmt=".1f")
    print(f"total predicted: {table.variant_predicted_s.sum():.0f} s "
          f"(default measured {table.default_measured_s.sum():.0f} s), plus DVC's own time")


if __name__ == "__main__":
    main()
