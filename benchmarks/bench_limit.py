"""How far the default study runs from this machine's limit: every stage's FLOPs, counted, over
the rate the study's own convolutions reach here, against the stage's last measured time.

    python benchmarks/bench_limit.py            # params.yaml's study, the last dvc repro's times
    python benchmarks/bench_limit.py --quick    # a shorter throughput measurement

1. FLOPs are counted, not estimated from a formula: ``torch.utils.flop_counter``'s registry
   (matrix products and convolutions, forward and backward) counts one training step and one
   forward pass of every model the study trains, and every evaluation task of the evaluate
   stage on an untrained model of its head (the count does not depend on the weights). A
   stage's FLOPs are those counts times what ``params.yaml`` makes the stage do: optimizer
   steps and validation passes per run, runs per head, shift-grid images per run.
2. The rate is measured on one thread at the study's shapes (batch ``train.batch_size`` for a
   training step, ``evaluate.batch_size`` for a BatchNorm-folded forward pass), best of several
   rounds. A stage's limit is its FLOPs at those rates divided by the cores that share its
   runs: every core for the Dask stages (one single-thread worker per core), one for ``speed``.
3. The measured time is the executed notebook's papermill duration (``reports/notebooks/``),
   from the last ``dvc repro``; a stage without one shows no ratio.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from _common import PARAMS_FILE, parse_args, print_table, setup
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

from gap_study.data.canvas import CanvasDataset, load_prepared, to_float
from gap_study.data.splits import fraction_subset, steps_per_epoch
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.models import build_model, fold_batch_norm
from gap_study.pipeline.params import Params, load_params
from gap_study.pipeline.paths import Layout, RunId
from gap_study.pipeline.runtime import seed_everything
from gap_study.stages.evaluate import EvaluationData, evaluate_run
from gap_study.stages.mechanism import grid_images, mechanism_runs
from gap_study.stages.speed import time_block
from gap_study.stages.train import matched_epochs

STAGES = ("tune", "train", "evaluate", "mechanism", "speed")
# every stage's notebook, the two without FLOPs included: their time counts in the total
NOTEBOOKS = {"prepare": "prepare_data", **{stage: stage for stage in STAGES}, "report": "report"}


class _FlopCount(TorchDispatchMode):
    """``FlopCounterMode``'s count (its registry of matrix products and convolutions, forward
    and backward) without its module tracker, whose hooks ``torch.autograd.grad`` refuses
    (Grad-CAM in the evaluate stage calls it)."""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if (count := flop_registry.get(func._overloadpacket)) is not None:
            self.total += count(*args, **kwargs, out_val=out)
        return out


@contextmanager
def _no_inference_mode() -> Iterator[None]:
    """``torch.inference_mode`` as ``torch.no_grad`` for the block: inference mode hides its ops
    from Python dispatch modes, so a count would miss every evaluation pass; no_grad runs the
    same kernels on the same shapes. Decorated functions enter a fresh ``inference_mode``
    at each call, so patching the class reaches them too."""
    mode = torch.autograd.grad_mode.inference_mode
    enter, leave = mode.__enter__, mode.__exit__

    def no_grad_enter(self: Any) -> None:
        self._no_grad = torch.no_grad()
        self._no_grad.__enter__()

    mode.__enter__ = no_grad_enter
    mode.__exit__ = lambda self, *exc: self._no_grad.__exit__(*exc)
    try:
        yield
    finally:
        mode.__enter__, mode.__exit__ = enter, leave


def counted(fn: Callable[[], object]) -> int:
    """The FLOPs ``fn`` runs (matrix products and convolutions)."""
    with _no_inference_mode(), _FlopCount() as counter:
        fn()
    return counter.total


class Costs:
    """FLOPs per image of each model the study builds: a training step (forward and backward)
    and an evaluation forward pass (BatchNorm folded, as the evaluation runs it)."""

    def __init__(self, data: CanvasDataset, batch: int) -> None:
        self.x = to_float(data.x_train[:batch]).contiguous(memory_format=torch.channels_last)
        self.y = torch.as_tensor(data.y_train[:batch])
        self._cache: dict[ModelConfig, tuple[float, float]] = {}

    def per_image(self, config: ModelConfig) -> tuple[float, float]:
        """``(training step, evaluation forward)`` FLOPs per image of ``config``'s model."""
        if config not in self._cache:
            model = build_model(config).to(memory_format=torch.channels_last).train()
            train = counted(lambda: F.cross_entropy(model(self.x), self.y).backward())
            folded = fold_batch_norm(model.eval())
            # no inference mode around the count: it would hide the pass (``counted`` runs
            # the decorated evaluation functions' inference mode as no_grad instead)
            with torch.no_grad():
                forward = counted(lambda: folded(self.x))
            self._cache[config] = train / len(self.x), forward / len(self.x)
        return self._cache[config]


def run_flops(costs: Costs, config: ModelConfig, data: CanvasDataset, run: RunId,
              params: Params) -> tuple[float, float]:
    """``(training, evaluation)`` FLOPs of one training run as ``stages.train.train_run``
    takes it: its optimizer steps, and a validation pass every ``eval_every`` epochs."""
    train = params.train
    images = len(fraction_subset(data.y_train, run.fraction))
    epochs = matched_epochs(train.epochs, len(data.y_train), images, train.batch_size,
                            train.drop_last)
    seen = (epochs * steps_per_epoch(images, train.batch_size, train.drop_last)
            * train.batch_size if train.drop_last else epochs * images)
    every = max(1, epochs // train.epochs)
    passes = len(range(every, epochs + 1, every)) + (epochs % every != 0)
    step, forward = costs.per_image(config)
    return seen * step, passes * len(data.y_val) * forward


def tuning_runs(params: Params, layout: Layout) -> list[str]:
    """The head of every tuning run: the last tune stage's runs (its grid may have extended
    itself) when there are some, else each head with each starting rate and tuning seed."""
    if layout.tuning_runs.is_file():
        return pd.read_csv(layout.tuning_runs)["head"].tolist()
    return [head for head in params.heads for _ in params.tune.learning_rates
            for _ in params.tune.seeds]


def stage_flops(costs: Costs, params: Params, data: CanvasDataset,
                layout: Layout) -> pd.DataFrame:
    """One row per stage: ``train_flops`` (training steps) and ``eval_flops`` (forward
    passes for validation and scoring)."""
    config = {head: params.model.to_config(head, data) for head in params.heads}
    main = RunId(params.train.full_fraction, params.train.base_shift, 0)
    flops = {stage: np.zeros(2) for stage in STAGES}
    for head in tuning_runs(params, layout):
        flops["tune"] += run_flops(costs, config[head], data, main, params)
    for head in params.heads:
        for run in params.train.runs():
            flops["train"] += run_flops(costs, config[head], data, run, params)
    flops["evaluate"] += evaluate_flops(params, data, config)
    test_images = len(grid_images(data.y_test, params.mechanism.test_images,
                                  params.data.split_seed))
    offsets = (2 * params.evaluate.max_shift + 1) ** 2
    for mech in mechanism_runs(params.mechanism, params.model, params.train):
        cell = mech.cell.model(params.model).to_config(mech.head, data)
        if not mech.main:
            flops["mechanism"] += run_flops(costs, cell, data, mech.run, params)
        flops["mechanism"][1] += test_images * offsets * costs.per_image(cell)[1]
    speed = params.speed
    steps = speed.warmup + speed.rounds * speed.blocks * speed.steps
    for head in params.heads:
        flops["speed"][0] += steps * params.train.batch_size * costs.per_image(config[head])[0]
    rows = [{"stage": s, "train_flops": t, "eval_flops": e} for s, (t, e) in flops.items()]
    return pd.DataFrame([{"stage": "prepare", "train_flops": 0.0, "eval_flops": 0.0}, *rows,
                         {"stage": "report", "train_flops": 0.0, "eval_flops": 0.0}])


def evaluate_flops(params: Params, data: CanvasDataset,
                   config: dict[str, ModelConfig]) -> np.ndarray:
    """The evaluate stage's FLOPs: ``evaluate_run`` counted once per head and training
    fraction (its work differs between the whole training set and a fraction), times seeds.
    Grad-CAM's backward passes count as evaluation."""
    evaluation = EvaluationData.on(data, torch.device("cpu"))
    total = 0.0
    for head in params.heads:
        model = build_model(config[head]).to(memory_format=torch.channels_last).eval()
        for fraction, shift in params.train.variants:
            run = RunId(fraction, shift, 0)
            total += len(params.train.seeds) * counted(lambda run=run, model=model: evaluate_run(
                model, run, evaluation, params.evaluate,
                full_fraction=params.train.full_fraction))
    return np.array([0.0, total])


def rates(costs: Costs, params: Params, data: CanvasDataset,
          quick: bool) -> tuple[float, float]:
    """FLOP/s of one thread for a training step and a folded forward pass of ``gap`` (the
    backbone's convolutions are nearly all of its FLOPs; its counts from ``costs``), best of
    several blocks."""
    torch.set_num_threads(1)
    seed_everything(0)
    config = params.model.to_config("gap", data)
    model = build_model(config).to(memory_format=torch.channels_last).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=True)
    x = to_float(data.x_train[:params.train.batch_size]).contiguous(
        memory_format=torch.channels_last)
    y = torch.as_tensor(data.y_train[:params.train.batch_size])

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()
        optimizer.step()

    folded = fold_batch_norm(model.eval())
    batch = to_float(data.x_test[:params.evaluate.batch_size]).contiguous(
        memory_format=torch.channels_last)

    def forward() -> None:
        with torch.inference_mode():
            folded(batch)

    model.train()
    per_step, per_forward = costs.per_image(config)
    step_flops, forward_flops = per_step * len(x), per_forward * len(batch)
    number, blocks = (5, 3) if quick else (20, 7)
    best = {name: min(time_block(fn, number) for _ in range(blocks))
            for name, fn in (("train", step), ("eval", forward))}
    return step_flops / best["train"], forward_flops / best["eval"]


def measured_seconds(layout: Layout) -> dict[str, float]:
    """Each stage's papermill duration in its executed notebook, where there is one."""
    times = {}
    for stage, name in NOTEBOOKS.items():
        path = layout.root / "reports" / "notebooks" / f"{name}.ipynb"
        if path.is_file():
            duration = json.loads(path.read_text()).get("metadata", {}).get(
                "papermill", {}).get("duration")
            if duration is not None:
                times[stage] = float(duration)
    return times


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    setup(args)
    params = load_params(PARAMS_FILE)
    layout = Layout(Path(PARAMS_FILE).parent)
    if not layout.prepared.is_file():
        raise SystemExit(f"{layout.prepared} is missing: run `dvc repro prepare` first")
    data = load_prepared(layout.prepared)
    costs = Costs(data, params.train.batch_size)
    table = stage_flops(costs, params, data, layout)
    train_rate, eval_rate = rates(costs, params, data, args.quick)
    cores = os.cpu_count() or 1
    table["cores"] = [1 if stage == "speed" else cores for stage in table.stage]
    table["limit_s"] = (table.train_flops / train_rate + table.eval_flops / eval_rate) \
        / table.cores
    table["measured_s"] = table.stage.map(measured_seconds(layout))
    table.loc[len(table)] = {"stage": "total", "cores": cores,
                             **table.drop(columns=["stage", "cores"]).sum(min_count=1)}
    table["ratio"] = (table.measured_s / table.limit_s).where(table.limit_s > 0)
    table["gflop"] = (table.train_flops + table.eval_flops) / 1e9
    print(f"\nrates on one thread: training step {train_rate / 1e9:.1f} GFLOP/s, "
          f"folded forward {eval_rate / 1e9:.1f} GFLOP/s; {cores} cores\n")
    print_table(table[["stage", "gflop", "cores", "limit_s", "measured_s", "ratio"]],
                floatfmt=".2f")


if __name__ == "__main__":
    main()
