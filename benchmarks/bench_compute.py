"""Achieved training FLOP/s of each head's model, against a large matmul on the same device.

For every head in ``gap_study.nets.architecture.HEAD_NAMES`` the study's default model (widths
16, 32, 64; dense hidden 500) takes one training step on the default study's input (batch 64,
1 channel, the digits canvas of ``params.yaml``, 10 classes): forward, cross-entropy, backward, no
optimizer. ``FlopCounterMode`` counts the step's FLOPs, the step is timed, and efficiency is
its FLOP/s over that of a float32 matmul timed in the same rounds (the practical peak of this
device, not the datasheet's).

``FlopCounterMode`` counts matrix products and convolutions only (2 FLOPs per multiply-add);
batch norm, ReLU, pooling and the loss are not counted, so an efficiency is that of the
counted work, and the heads' own cost shows only where it is a product (``dense``, ``nin``).

    python benchmarks/bench_compute.py [--quick] [--device cpu] [--matmul-size 2048]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

import pandas as pd
import torch
import torch.nn.functional as F
from _common import (
    interleaved_times,
    parse_args,
    print_table,
    setup,
    study_digits_input,
    watch_contention,
)
from torch.utils.flop_counter import FlopCounterMode

from gap_study.nets.architecture import HEAD_NAMES, ModelConfig
from gap_study.nets.models import build_model, param_count
from gap_study.pipeline.runtime import seed_everything

BATCH, CHANNELS, CLASSES = 64, 1, 10
SIZE, _ = study_digits_input()  # the default study's digits canvas


def make_step(head: str, device: torch.device) -> tuple[Callable[[], None], int]:
    """A training step of ``head``'s default model (as ``train_run`` builds it) on a
    random batch; and the model's trainable parameter count."""
    config = ModelConfig(head=head, in_channels=CHANNELS, image_size=SIZE, num_classes=CLASSES)
    model = build_model(config).to(device=device, memory_format=torch.channels_last).train()
    x = torch.rand(BATCH, CHANNELS, SIZE, SIZE, device=device).contiguous(
        memory_format=torch.channels_last)
    y = torch.randint(CLASSES, (BATCH,), device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    return step, param_count(model)


def make_matmul(n: int, device: torch.device) -> Callable[[], object]:
    """An ``n x n`` float32 matrix product on ``device``."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    return lambda: a @ b


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (products and convolutions, backward included)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matmul-size", type=int, default=None,
                        help="side of the reference matmul (default 2048 on CPU, 8192 on CUDA)")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    device = setup(args)
    seed_everything(0)  # the study trains in deterministic mode; measure what it runs
    n = args.matmul_size or ((8192 if device.type == "cuda" else 2048) // (2 if args.quick else 1))
    rounds, min_run_time = (2, 0.1) if args.quick else (3, 0.5)
    calls = {"matmul": make_matmul(n, device)}
    params = {}
    for head in HEAD_NAMES:
        calls[head], params[head] = make_step(head, device)
    flops = {name: count_flops(fn) for name, fn in calls.items()}
    seconds = interleaved_times(calls, rounds=rounds, min_run_time=min_run_time)
    peak = flops["matmul"] / seconds["matmul"]
    table = pd.DataFrame([{"model": name if name != "matmul" else f"matmul {n}x{n}",
                           "params": params.get(name, ""), "gflop_per_step": flops[name] / 1e9,
                           "ms_per_step": 1e3 * seconds[name],
                           "gflop_s": flops[name] / seconds[name] / 1e9,
                           "efficiency": flops[name] / seconds[name] / peak} for name in calls])
    tf32 = (f"; TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, "
            f"cuDNN {torch.backends.cudnn.allow_tf32}" if device.type == "cuda" else "")
    print(f"\nfloat32 on {device}, deterministic mode{tf32}; batch {BATCH}x{CHANNELS}x{SIZE}x"
          f"{SIZE}; forward+backward per step; best of {rounds} alternating rounds (each a "
          f"median); efficiency = FLOP/s / matmul FLOP/s\n")
    print_table(table.round({"gflop_per_step": 4, "ms_per_step": 3, "gflop_s": 2,
                             "efficiency": 3}), floatfmt="g")
    heads = table.iloc[1:]
    best, worst = heads.loc[heads.efficiency.idxmax()], heads.loc[heads.efficiency.idxmin()]
    print(f"\nVERDICT: matmul reaches {peak / 1e9:.1f} GFLOP/s here; the heads' training steps "
          f"reach {100 * worst.efficiency:.0f}% ({worst.model}) to "
          f"{100 * best.efficiency:.0f}% ({best.model}) of it.")


if __name__ == "__main__":
    with watch_contention():
        main()
