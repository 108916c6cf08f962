"""Training speed, measured the way the benchmarks measure (``docs/study.md``, "Metrics"):
one training step of every head, timed in alternating order in one process, over several
rounds.

Per-run timings taken while other runs train beside them (parallel workers) say more about
the neighbours than about the head. Here every head is timed under the same machine load:
within a round the heads take turns (the order reversed every other round, so that neither
warm-up nor a slow spell favours the head that always comes first), each round keeps the
median of its blocks, and the rounds are the replicates of the speed comparison.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F

from gap_study.data.canvas import CanvasDataset, to_float
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.models import build_model
from gap_study.pipeline.params import ModelParams, SpeedParams, TrainParams
from gap_study.pipeline.runtime import seed_everything, to_device, torch_threads
from gap_study.stages.train import optimizer_for

__all__ = [
    "alternate",
    "interleaved_step_times",
    "measure_step_times",
    "sync",
    "time_block",
    "training_step",
]


def sync() -> None:
    """Wait for queued CUDA kernels, so that a wall-clock reading covers their work."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def time_block(fn: Callable[[], object], number: int) -> float:
    """Seconds per call of ``fn`` over one block of ``number`` calls, CUDA synchronised around
    the block (so that its kernels are inside the measurement).

    Timed directly rather than with ``torch.utils.benchmark.Timer``: its ``timeit`` makes
    warm-up calls before every block (three times the work where one call is long), and
    ``blocked_autorange`` grows its blocks again on every call.
    """
    sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync()
    return (time.perf_counter() - start) / number


def alternate(names: list[str], round_index: int) -> list[str]:
    """``names`` in order on even rounds, reversed on odd ones."""
    return names if round_index % 2 == 0 else names[::-1]


def training_step(config: ModelConfig, data: CanvasDataset, *, batch_size: int, lr: float,
                  seed: int, device: torch.device, schedule: str,
                  weight_decay: float) -> Callable[[], None]:
    """One optimizer step of ``config``'s model per call, as ``gap_study.stages.train.fit`` takes it
    (train mode, cross-entropy, the same optimizer, weight decay and schedule), on the next
    ``batch_size`` training images of a seeded order; the images are on ``device`` before
    the clock starts."""
    seed_everything(seed)
    model = build_model(config).to(device=device, memory_format=torch.channels_last).train()
    # a long schedule: the learning rate's value changes no step's time; weight decay adds
    # a term to every parameter's update, so it is the study's
    optimizer, scheduler = optimizer_for(model, lr=lr, weight_decay=weight_decay,
                                         schedule=schedule, total_steps=10**6)
    images = to_device(to_float(data.x_train), device)
    labels = to_device(torch.as_tensor(data.y_train), device)
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed)).to(device)
    batches = [order[i:i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)]
    position = 0

    def step() -> None:
        nonlocal position
        idx = batches[position % len(batches)]
        position += 1
        loss = F.cross_entropy(model(images[idx]), labels[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()

    step.model = model  # type: ignore[attr-defined]  # what it trains, for inspection
    step.optimizer = optimizer  # type: ignore[attr-defined]
    return step


def interleaved_step_times(steps: Mapping[str, Callable[[], None]], *, rounds: int,
                           blocks: int, steps_per_block: int, warmup: int) -> pd.DataFrame:
    """Seconds per step of each head: ``warmup`` untimed steps each, then ``rounds`` rounds in
    which the heads take turns (``alternate``), each timing ``blocks`` blocks of
    ``steps_per_block`` steps. One row per head and round: ``head, round,
    seconds_per_step`` (the median of that round's blocks)."""
    for step in steps.values():
        for _ in range(warmup):
            step()
    rows = []
    for r in range(rounds):
        for head in alternate(list(steps), r):
            seconds = statistics.median(time_block(steps[head], steps_per_block)
                                        for _ in range(blocks))
            rows.append({"head": head, "round": r, "seconds_per_step": seconds})
    return pd.DataFrame(rows)


def measure_step_times(heads: Sequence[str], model: ModelParams, data: CanvasDataset,
                       train: TrainParams, settings: SpeedParams, *, lr: float, threads: int,
                       device: torch.device) -> pd.DataFrame:
    """The speed stage: ``interleaved_step_times`` of every head's model as the study trains
    it (``model`` sized for ``data``, ``train``'s batch size, schedule and weight decay; seed
    0, whose images and weights change no step's time, nor does the learning rate ``lr``),
    with ``threads`` torch threads, the number each training run gets."""
    with torch_threads(threads):
        steps = {head: training_step(model.to_config(head, data), data,
                                     batch_size=train.batch_size, lr=lr, seed=0,
                                     device=device, schedule=train.schedule,
                                     weight_decay=train.weight_decay) for head in heads}
        return interleaved_step_times(steps, rounds=settings.rounds, blocks=settings.blocks,
                                      steps_per_block=settings.steps, warmup=settings.warmup)
