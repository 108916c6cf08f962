"""A readable, deterministic training loop (Adam, cross-entropy, per-epoch history) and the
training of one run of the study (``docs/study.md``, "Training").

Same data, config and seed on the same machine give bit-identical weights: the seed fixes
the initial weights and the minibatch order, and
``gap_study.pipeline.runtime.seed_everything`` rules out nondeterministic kernels.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # the text bar: it streams to the terminal under papermill too

from gap_study.data.canvas import CanvasDataset, random_offsets, shift_each, to_float
from gap_study.data.splits import fraction_subset, steps_per_epoch
from gap_study.measures.finite import require_finite
from gap_study.measures.metrics import loss_and_accuracy
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.checkpoints import checkpoint_payload
from gap_study.nets.models import ClassifierNet, build_model
from gap_study.pipeline.params import ModelParams, TrainParams
from gap_study.pipeline.paths import Layout, RunId
from gap_study.pipeline.provenance import worker_facts
from gap_study.pipeline.runtime import resolve_device, seed_everything, to_device

__all__ = [
    "TrainedRun",
    "fit",
    "matched_epochs",
    "optimizer_for",
    "read_learning_rates",
    "train_run",
    "train_task",
]


def optimizer_for(model: nn.Module, *, lr: float, weight_decay: float, schedule: str,
                  total_steps: int) -> tuple[torch.optim.Optimizer, Any]:
    """Fused Adam over the model's parameter groups (``ClassifierNet.parameter_groups``: one
    group, or ``gsp_scaled``'s scaled classifier) and, for ``schedule == "cosine"``, a
    scheduler taking the learning rate to 0 over ``total_steps`` optimizer steps (``None`` for
    ``"constant"``)."""
    groups = (model.parameter_groups(lr, weight_decay) if hasattr(model, "parameter_groups")
              else model.parameters())
    # fused: one kernel updates every parameter (for dense, a million-plus weights)
    optimizer = torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, fused=True)
    if schedule == "constant":
        return optimizer, None
    if schedule != "cosine":
        raise ValueError(f"unknown schedule {schedule!r}; allowed: cosine, constant")
    return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)


def matched_epochs(epochs: int, full_size: int, subset_size: int, batch_size: int,
                   drop_last: bool) -> int:
    """Epochs over ``subset_size`` images that take at least as many optimizer steps as
    ``epochs`` over ``full_size`` images, so a smaller training set gets the same training
    budget: a learning curve then shows the effect of data, not of a shorter training."""
    steps = epochs * steps_per_epoch(full_size, batch_size, drop_last)
    return math.ceil(steps / max(1, steps_per_epoch(subset_size, batch_size, drop_last)))


def fit(model: nn.Module, x_train: Tensor, y_train: Tensor, x_val: Tensor, y_val: Tensor,
        settings: TrainParams, *, lr: float, epochs: int, train_shift: int = 0,
        eval_every: int = 1, generator: torch.Generator, progress: bool = True,
        desc: str = "train") -> pd.DataFrame:
    """Train ``model`` in place on tensors on its device for ``epochs`` passes (the run's own
    count); ``settings`` gives batch size, weight decay, schedule and ``drop_last``.
    ``train_shift > 0`` moves each training image by its own random offset in
    ``[-train_shift, train_shift]^2`` (zero fill), redrawn at every use. A history row every
    ``eval_every`` epochs and after the last: ``epoch``, running ``train_loss, train_accuracy``
    (train mode), ``val_loss, val_accuracy`` (eval mode, on ``x_val``), ``epoch_seconds,
    images_per_second`` (the training passes alone)."""
    device, n, batch_size = x_train.device, len(x_train), settings.batch_size
    per_epoch = steps_per_epoch(n, batch_size, settings.drop_last)
    if per_epoch == 0:
        raise ValueError(f"{n} training images make no full batch of {batch_size}: lower "
                         "train.batch_size or turn off train.drop_last")
    optimizer, scheduler = optimizer_for(model, lr=lr, weight_decay=settings.weight_decay,
                                         schedule=settings.schedule, total_steps=epochs * per_epoch)
    history, seen = [], 0
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    passes, since = 0, time.perf_counter()
    for epoch in tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress):
        model.train()
        # 1. the order is drawn on the CPU from the run's generator: the same on every device
        order = torch.randperm(n, generator=generator).to(device)
        for i in range(0, per_epoch * batch_size, batch_size):
            idx = order[i:i + batch_size]
            images = x_train[idx]
            # 2. augmentation draws from the same generator, after the order: reproducible
            if train_shift:
                dx, dy = random_offsets(len(idx), train_shift, generator)
                images = shift_each(images, dx, dy).contiguous(memory_format=torch.channels_last)
            logits = model(images)
            loss = F.cross_entropy(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:  # 3. the learning rate follows every step
                scheduler.step()
            # 4. accumulate on the device: no host sync inside the loop
            loss_sum.add_(loss.detach(), alpha=len(idx))
            correct += (logits.argmax(dim=1) == y_train[idx]).sum()
            seen += len(idx)
        passes += 1
        if epoch % eval_every and epoch != epochs:
            continue
        # 5. a history row: sync the device first, so the clock covers the training passes
        train_loss, train_correct = loss_sum.item(), correct.item()
        seconds = time.perf_counter() - since
        val_loss, val_accuracy = loss_and_accuracy(model, x_val, y_val,
                                                   settings.validation_batch_size)
        history.append({"epoch": epoch, "train_loss": train_loss / seen,
                        "train_accuracy": train_correct / seen, "val_loss": val_loss,
                        "val_accuracy": val_accuracy, "epoch_seconds": seconds / passes,
                        "images_per_second": seen / seconds})
        loss_sum.zero_()
        correct.zero_()
        passes, seen, since = 0, 0, time.perf_counter()
    return pd.DataFrame(history)


def train_run(config: ModelConfig, data: CanvasDataset, run: RunId, settings: TrainParams,
              lr: float, *, device: str | torch.device = "auto",
              progress: bool = True) -> tuple[ClassifierNet, pd.DataFrame]:
    """Train one run of the study: build ``config``'s model from ``run.seed`` and train it on
    ``run``'s fraction of ``data``, with its training shift, the learning rate ``lr`` (the
    head's, from the tune stage) and the ``train`` settings; return model and history.

    A fraction below 1 trains on ``fraction_subset`` of the training set, for
    ``matched_epochs`` (the same number of optimizer steps as ``settings.epochs`` on all of
    it). The validation split is evaluated about ``settings.epochs`` times, however many
    epochs the run takes; the test split is never touched. History columns: ``fraction,
    train_shift, seed`` and those of ``fit``.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    seed_everything(run.seed)
    # channels_last is the faster convolution layout on CPU and on CUDA alike.
    model = build_model(config).to(device=device, memory_format=torch.channels_last)
    keep = fraction_subset(data.y_train, run.fraction)
    x_train = to_device(to_float(data.x_train[keep]), device)
    x_val = to_device(to_float(data.x_val), device)
    y_train = to_device(torch.as_tensor(data.y_train[keep]), device)
    y_val = to_device(torch.as_tensor(data.y_val), device)
    epochs = matched_epochs(settings.epochs, len(data.y_train), len(keep), settings.batch_size,
                            settings.drop_last)
    history = fit(model, x_train, y_train, x_val, y_val, settings, lr=lr, epochs=epochs,
                  train_shift=run.train_shift, eval_every=max(1, epochs // settings.epochs),
                  generator=torch.Generator().manual_seed(run.seed), progress=progress,
                  desc=f"{config.head} {run.stem}")
    history.insert(0, "seed", run.seed)
    history.insert(0, "train_shift", run.train_shift)
    history.insert(0, "fraction", run.fraction)
    return model.eval(), history


@dataclass(frozen=True)
class TrainedRun:
    """What a training task returns: the checkpoint's payload, the run's history and where
    it ran (``gap_study.pipeline.provenance.worker_facts``)."""

    checkpoint: dict[str, Any]
    history: pd.DataFrame
    worker: dict[str, object]


def train_task(item: tuple[str, RunId], *, data: CanvasDataset, architecture: ModelParams,
               settings: TrainParams, learning_rates: Mapping[str, float],
               device: str) -> TrainedRun:
    """One run of one head, ``item = (head, run)``, as a task of ``gap_study.pipeline.engine``:
    ``train_run`` of the head's model sized for ``data``, with the head's learning rate, on
    the device ``device`` names where the task runs, without a progress bar (the engine
    reports each finished run)."""
    head, run = item
    torch_device = resolve_device(device)
    model, history = train_run(architecture.to_config(head, data), data, run, settings,
                               learning_rates[head], device=torch_device, progress=False)
    # a diverged run fails here, before its checkpoint is kept, not in the evaluate stage
    require_finite(history.iloc[-1][["train_loss", "val_loss"]].to_dict(),
                   run=f"{head} {run.stem}")
    return TrainedRun(checkpoint_payload(model), history, worker_facts(torch_device))


def read_learning_rates(layout: Layout, heads: Sequence[str]) -> dict[str, float]:
    """The tune stage's choice of each head's learning rate (``Layout.learning_rates``), with
    a rate for every one of ``heads``: a missing or damaged file, or a head without a rate,
    stops a stage before any run, naming the file and the fix."""
    path = layout.learning_rates
    key = path.relative_to(layout.root).as_posix()
    restore = (f"restore it with `dvc checkout --force {key}`, or choose the rates again with "
               "`dvc repro -f -s tune`")
    try:
        chosen = json.loads(path.read_text())
    except FileNotFoundError:
        raise FileNotFoundError(f"{key} is missing: the tune stage writes it; run "
                                "`dvc repro tune`") from None
    except (OSError, ValueError) as error:
        raise ValueError(f"{key} is damaged ({error}); {restore}") from None
    if not isinstance(chosen, dict) or not all(_positive_rate(rate) for rate in chosen.values()):
        raise ValueError(f"{key} is damaged (not a positive rate per head); {restore}")
    if missing := [head for head in heads if head not in chosen]:
        raise ValueError(f"{key} has no learning rate for {', '.join(missing)}: the tune stage "
                         f"chose rates for {', '.join(chosen) or 'no head'}, the heads of "
                         "params.yaml when it ran. Add the heads to `heads` in params.yaml and "
                         "run `dvc repro`, which tunes them first")
    return {head: float(rate) for head, rate in chosen.items()}


def _positive_rate(rate: object) -> bool:
    """Whether a JSON value is a learning rate: a finite positive number, not a boolean."""
    try:
        return type(rate) in (int, float) and math.isfinite(rate) and rate > 0  # type: ignore
    except OverflowError:  # an integer too large for a float
        return False
