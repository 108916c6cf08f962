"""Overhead of the project's training function, ``gap_study.stages.train.fit``, over a minimal loop.

Both sides train the same architecture, built fresh from the same seed, on the same tensors
(the digits set on the default study's canvas from ``params.yaml``, channels_last as
``train_run`` puts them), with
Adam, cross-entropy and ``randperm`` minibatches of the same size for the same number of
steps, and evaluate the test set in eval mode after every epoch, as ``fit`` does. They run in
one process, alternating over several rounds. A third loop, the bare one plus ``fit``'s
per-batch bookkeeping (running loss and accuracy, kept on the device), tells that cost apart,
and the bookkeeping is also timed on its own. All three must end with bit-identical weights:
proof that they did the same training.

    python benchmarks/bench_harness.py [--quick] [--device cpu] [--epochs 3] [--rounds 6]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from functools import partial

import pandas as pd
import torch
import torch.nn.functional as F
from _common import (
    PARAMS_FILE,
    interleaved_times,
    parse_args,
    print_table,
    setup,
    study_digits_input,
    watch_contention,
)
from torch import Tensor, nn

from gap_study.data.canvas import to_float
from gap_study.data.prepare import prepare_dataset
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.models import build_model
from gap_study.pipeline.params import TrainParams, load_params
from gap_study.pipeline.runtime import seed_everything
from gap_study.stages.speed import alternate, sync
from gap_study.stages.train import fit

LIMIT = 1.10
HEADS = ("dense", "gap", "gmp")
QUICK_HEADS = ("dense", "gap")
BATCH_SIZE, LR, SEED = 64, 1e-3, 0  # the study's defaults (params.yaml, train)

Tensors = tuple[Tensor, Tensor, Tensor, Tensor]  # x_train, y_train, x_test, y_test
Trainer = Callable[..., object]


def load_tensors(device: torch.device) -> tuple[Tensors, int, int]:
    """The digits tensors on ``device``, as ``train_run`` makes them; channels, size."""
    canvas, digits_size = study_digits_input()
    split = load_params(PARAMS_FILE).data  # the default study's split of the digits
    data = prepare_dataset("digits", canvas=canvas, digits_size=digits_size,
                           test_fraction=split.test_fraction,
                           validation_fraction=split.validation_fraction,
                           split_seed=split.split_seed, two_objects=0)
    tensors = (to_float(data.x_train).to(device, memory_format=torch.channels_last),
               torch.as_tensor(data.y_train).to(device),
               to_float(data.x_test).to(device, memory_format=torch.channels_last),
               torch.as_tensor(data.y_test).to(device))
    return tensors, data.in_channels, data.image_size


def fresh_model(config: ModelConfig, device: torch.device) -> nn.Module:
    """The model ``train_run`` would start from: seeded, channels_last, on ``device``."""
    seed_everything(SEED)
    return build_model(config).to(device=device, memory_format=torch.channels_last)


def bare_fit(model: nn.Module, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor,
             *, epochs: int, batch_size: int, lr: float, generator: torch.Generator,
             running_metrics: bool = False) -> None:
    """The minimal loop: Adam, cross-entropy, ``randperm`` minibatches; after every epoch the
    test loss and accuracy in eval mode under ``inference_mode``, as ``fit`` does.

    ``running_metrics`` adds what ``fit`` adds to every batch (the running training loss and
    accuracy, accumulated on the device and read once per epoch), to tell its cost apart.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    n = len(x_train)
    loss_sum = torch.zeros((), device=x_train.device)
    correct = torch.zeros((), device=x_train.device, dtype=torch.long)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(n, generator=generator).to(x_train.device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            logits = model(x_train[idx])
            loss = F.cross_entropy(logits, y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if running_metrics:  # fit's two lines
                loss_sum += loss.detach() * len(idx)
                correct += (logits.argmax(dim=1) == y_train[idx]).sum()
        if running_metrics:
            loss_sum.item(), correct.item()
        model.eval()
        with torch.inference_mode():
            logits = model(x_test)
            F.cross_entropy(logits, y_test).item()
            (logits.argmax(dim=1) == y_test).sum().item()


def harness_fit(model: nn.Module, *tensors: Tensor, epochs: int, batch_size: int, lr: float,
                generator: torch.Generator) -> None:
    """The project's loop, as ``train_run`` calls it (without the progress bar)."""
    settings = TrainParams(seeds=[SEED], epochs=epochs, batch_size=batch_size,
                           schedule="constant", drop_last=False, weight_decay=0.0,
                           validation_batch_size=512, fractions=[1.0], shift=[0])
    fit(model, *tensors, settings, lr=lr, epochs=epochs, generator=generator, progress=False)


TRAINERS: dict[str, Trainer] = {"harness": harness_fit, "bare": bare_fit,
                                "bare+metrics": partial(bare_fit, running_metrics=True)}


def timed_run(trainer: Trainer, config: ModelConfig, tensors: Tensors, epochs: int,
              device: torch.device) -> tuple[float, nn.Module]:
    """Wall seconds of one training run from a fresh model (building it is not timed)."""
    model = fresh_model(config, device)
    generator = torch.Generator().manual_seed(SEED)
    sync()
    start = time.perf_counter()
    trainer(model, *tensors, epochs=epochs, batch_size=BATCH_SIZE, lr=LR, generator=generator)
    sync()
    return time.perf_counter() - start, model


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    """Bit-identical parameters and buffers: proof that both loops did the same training."""
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def bookkeeping_seconds(tensors: Tensors, num_classes: int, min_run_time: float) -> float:
    """Seconds per batch of what ``fit`` adds to each step: the running loss and accuracy
    (a second ``y_train[idx]`` gather, an argmax, a compare, two sums; no host sync)."""
    x_train, y_train = tensors[0], tensors[1]
    device = x_train.device
    idx = torch.randperm(len(x_train))[:BATCH_SIZE].to(device)
    logits = torch.randn(BATCH_SIZE, num_classes, device=device)
    loss = F.cross_entropy(logits, y_train[idx])
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)

    def bookkeeping() -> None:
        nonlocal loss_sum, correct
        loss_sum += loss.detach() * len(idx)
        correct += (logits.argmax(dim=1) == y_train[idx]).sum()

    return interleaved_times({"bookkeeping": bookkeeping}, rounds=3,
                             min_run_time=min_run_time)["bookkeeping"]


def compare_head(head: str, tensors: Tensors, in_channels: int, image_size: int, *,
                 epochs: int, rounds: int, device: torch.device) -> dict:
    """One table row: both loops on one head, alternating over ``rounds``."""
    config = ModelConfig(head=head, in_channels=in_channels, image_size=image_size,
                         num_classes=10, widths=(16, 32, 64), dense_hidden=500)
    timed_run(bare_fit, config, tensors, 1, device)  # warm-up: allocator, oneDNN primitives
    seconds: dict[str, list[float]] = {name: [] for name in TRAINERS}
    models: dict[str, nn.Module] = {}
    for r in range(rounds):
        for name in alternate(list(TRAINERS), r):
            elapsed, models[name] = timed_run(TRAINERS[name], config, tensors, epochs, device)
            seconds[name].append(elapsed)
    images = epochs * len(tensors[0])
    steps = epochs * -(-len(tensors[0]) // BATCH_SIZE)
    best = {name: min(values) for name, values in seconds.items()}
    paired = [h / b for h, b in zip(seconds["harness"], seconds["bare"], strict=True)]
    return {"head": head, "harness_img_s": images / best["harness"],
            "bare_img_s": images / best["bare"], "ratio": best["harness"] / best["bare"],
            "ratio_paired_median": statistics.median(paired),
            "metrics_ratio": best["bare+metrics"] / best["bare"],
            "bare_ms_per_step": 1e3 * best["bare"] / steps,
            "same_weights": same_weights(models["harness"], models["bare"])
            and same_weights(models["harness"], models["bare+metrics"])}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--epochs", type=int, default=None, help="epochs per run (default 3)")
    parser.add_argument("--rounds", type=int, default=None, help="runs of each loop (default 6)")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    device = setup(args)
    heads = QUICK_HEADS if args.quick else HEADS
    epochs = args.epochs or (1 if args.quick else 3)
    rounds = args.rounds or (2 if args.quick else 6)
    tensors, in_channels, image_size = load_tensors(device)
    table = pd.DataFrame([compare_head(head, tensors, in_channels, image_size, epochs=epochs,
                                       rounds=rounds, device=device) for head in heads])
    bookkeeping_us = 1e6 * bookkeeping_seconds(tensors, 10, 0.2)
    print(f"\n{len(tensors[0])} training images, batch {BATCH_SIZE}, {epochs} epoch(s) per run, "
          f"{rounds} runs of each loop alternating; images/s of the best run (wall time of the "
          f"whole call, test evaluations included); ratio = harness time / bare time "
          f"(best runs; and the median over adjacent pairs); metrics_ratio = time of the bare loop "
          f"with fit's running loss/accuracy added / bare time; limit {LIMIT}\n")
    print_table(table.round({"harness_img_s": 0, "bare_img_s": 0, "ratio": 3,
                             "ratio_paired_median": 3, "metrics_ratio": 3,
                             "bare_ms_per_step": 2}), floatfmt="g")
    step_us = 1e3 * table.bare_ms_per_step.min()
    print(f"\nfit's per-batch bookkeeping (running loss/accuracy, on the device): "
          f"{bookkeeping_us:.1f} us per step, {100 * bookkeeping_us / step_us:.1f}% of the "
          f"fastest head's step ({step_us:.0f} us)\n")
    print(verdict(table))


def verdict(table: pd.DataFrame) -> str:
    """The one-line verdict on the harness overhead, and what it comes from."""
    worst = table.loc[table.ratio.idxmax()]
    identical = "bit-identical weights" if table.same_weights.all() else \
        "WEIGHTS DIFFER (the loops did not do the same work)"
    if worst.ratio <= LIMIT:
        return (f"VERDICT: PASS, fit is within {LIMIT}x of the bare loop on every head (worst "
                f"{worst.ratio:.3f}x on {worst['head']}); {identical}.")
    return (f"VERDICT: FAIL, fit is {worst.ratio:.3f}x the bare loop's time on {worst['head']} "
            f"(limit {LIMIT}); its running loss/accuracy alone make the bare loop "
            f"{worst.metrics_ratio:.3f}x; {identical}.")


if __name__ == "__main__":
    with watch_contention():
        main()
