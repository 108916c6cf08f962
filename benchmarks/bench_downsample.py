"""What the mechanism factors cost: the backbone's downsampling (``max``, ``blurmax`` with
filter 3 or 5, ``aps``) and its padding (``zeros``, ``circular``, ``reflect``), timed as one
training step of the default study's ``gap`` and ``dense`` models, and the downsampling layer
alone.

A training step is what ``gap_study.stages.train.fit`` does per batch: forward, cross-entropy,
backward and a fused Adam step, on a channels_last model and batch, under the runs'
deterministic mode (``seed_everything``). Each head's variants are timed in alternating rounds
(best round's median) against the plain run of the same head (``max``, ``zeros``). One more
row times the plain ``gap`` step with deterministic mode's NaN fills of new tensors turned on
(``gap_study.pipeline.runtime.FILL_UNINITIALIZED_MEMORY``). kornia's ``MaxBlurPool2D`` (zero
padding, no padding of the max) is the library reference for the layer alone. Last, the
backbone's convolutions alone in each padding.

    python benchmarks/bench_downsample.py [--quick] [--device cpu] [--threads 1] [--thread-time]

``--thread-time`` (CPU, one thread) times each block in the thread's CPU time instead of wall
time: on a machine that other processes load, the only numbers worth comparing.
"""

from __future__ import annotations

import argparse
import itertools
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
    thread_time_block,
    time_block,
    watch_contention,
)
from kornia.filters import MaxBlurPool2D

from gap_study.nets.architecture import BLUR_SIZES, PADDINGS, ModelConfig
from gap_study.nets.downsample import make_downsample
from gap_study.nets.models import build_model, make_conv
from gap_study.pipeline.runtime import seed_everything, to_device
from gap_study.stages.train import optimizer_for

BATCH = 64
HEADS = ("gap", "dense")
PLAIN = ("max", 3, "zeros")
VARIANTS = [("max", 3, padding) for padding in PADDINGS] + [
    ("blurmax", size, padding) for size, padding in itertools.product(BLUR_SIZES, PADDINGS)] + [
    ("aps", 3, padding) for padding in PADDINGS]
QUICK_VARIANTS = [PLAIN, ("max", 3, "circular"), ("blurmax", 3, "zeros"),
                  ("blurmax", 3, "circular"), ("aps", 3, "zeros"), ("aps", 3, "circular")]
FILLS = "max/zeros, NaN fills on"


def training_step(head: str, variant: tuple[str, int, str], canvas: int,
                  device: torch.device, *, fills: bool = False) -> Callable[[], None]:
    """One training step of ``head``'s default model with ``variant``'s downsampling and
    padding, as ``fit`` takes it; ``fills``: with deterministic mode's NaN fills."""
    downsample, blur_size, padding = variant
    seed_everything(0)
    config = ModelConfig(head=head, in_channels=1, image_size=canvas, num_classes=10,
                         downsample=downsample, blur_size=blur_size, padding=padding)
    model = build_model(config).to(device=device, memory_format=torch.channels_last).train()
    optimizer, _ = optimizer_for(model, lr=1e-3, weight_decay=0.0, schedule="constant",
                                 total_steps=1)
    images = to_device(torch.rand(BATCH, 1, canvas, canvas), device)
    labels = to_device(torch.randint(0, 10, (BATCH,)), device)

    def step() -> None:
        torch.utils.deterministic.fill_uninitialized_memory = fills
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        torch.utils.deterministic.fill_uninitialized_memory = False
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def layer_call(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward and backward of one downsampling layer, with a random channels_last gradient
    (a ``sum()``'s expanded gradient would time a layout no network passes back)."""
    with torch.no_grad():
        grad = torch.rand_like(layer(x), memory_format=torch.channels_last)

    def call() -> None:
        x.grad = None
        layer(x).backward(grad)
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
    return call


def label(downsample: str, blur_size: int, padding: str) -> str:
    return f"{downsample}{blur_size if downsample == 'blurmax' else ''}/{padding}"


Timer = Callable[[Callable[[], None], int], float]


def step_table(variants: list[tuple[str, int, str]], canvas: int, device: torch.device,
               rounds: int, min_run_time: float, timer: Timer) -> pd.DataFrame:
    """Each head's step times and their ratio to the head's plain run, side by side."""
    columns: dict[str, dict[str, float]] = {}
    for head in HEADS:
        steps = {label(*v): training_step(head, v, canvas, device) for v in variants}
        if head == "gap":
            steps[FILLS] = training_step(head, PLAIN, canvas, device, fills=True)
        times = interleaved_times(steps, rounds=rounds, min_run_time=min_run_time, timer=timer)
        base = times[label(*PLAIN)]
        columns[f"{head}_ms"] = {name: t * 1e3 for name, t in times.items()}
        columns[f"{head}_vs_plain"] = {name: t / base for name, t in times.items()}
    return pd.DataFrame(columns).rename_axis("variant").reset_index()


def layer_table(variants: list[tuple[str, int, str]], canvas: int, device: torch.device,
                rounds: int, min_run_time: float, timer: Timer) -> pd.DataFrame:
    """The first downsampling layer alone, against a max-pool and kornia's layer."""
    # its input: 16 channels at the canvas's size, channels_last as in training
    x = torch.rand(BATCH, 16, canvas, canvas, device=device).contiguous(
        memory_format=torch.channels_last).requires_grad_()
    layers = {label(*v): layer_call(make_downsample(v[0], 16, v[1], v[2]).to(device), x)
              for v in variants}
    layers["kornia MaxBlurPool2D(3)/zeros"] = layer_call(MaxBlurPool2D(3).to(device), x)
    times = interleaved_times(layers, rounds=rounds, min_run_time=min_run_time, timer=timer)
    base = times[label(*PLAIN)]
    return pd.DataFrame([{"variant": name, "layer_us": t * 1e6, "layer_vs_max_pool": t / base}
                         for name, t in times.items()])


def backbone_convs(canvas: int) -> list[tuple[int, int, int]]:
    """``(in channels, out channels, side)`` of each of the default backbone's convolutions."""
    config = ModelConfig(head="gap", in_channels=1, image_size=canvas, num_classes=10)
    channels = (config.in_channels, *config.widths)
    return [(channels[i], channels[i + 1], canvas // 2**i) for i in range(len(config.widths))]


def all_taps_ratio(side: int) -> float:
    """How many more multiplications a 3x3 convolution padded by one does when it reads every
    tap than when it skips those on zero padding: ``(3 s / (3 s - 2))`` squared."""
    return (3 * side / (3 * side - 2)) ** 2


def conv_call(conv: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
              grad: torch.Tensor, weight: torch.Tensor) -> Callable[[], None]:
    """Forward and backward of one convolution, as a training step takes it."""
    def call() -> None:
        x.grad = weight.grad = None
        conv(x).backward(grad)
    return call


def conv_table(canvas: int, device: torch.device, rounds: int, min_run_time: float,
               timer: Timer) -> pd.DataFrame:
    """Each backbone convolution, forward and backward (the images' without an input
    gradient), padding inside (``zeros``) against the same convolution of a zero-padded copy,
    and as ``circular`` and ``reflect`` models run it. oneDNN skips the taps that fall on
    padding it adds itself; a padded copy's zeros, and every circular or reflected value, it
    multiplies."""
    rows = []
    for in_channels, out_channels, side in backbone_convs(canvas):
        x = torch.rand(BATCH, in_channels, side, side, device=device).contiguous(
            memory_format=torch.channels_last).requires_grad_(in_channels > 1)
        grad = torch.rand(BATCH, out_channels, side, side, device=device).contiguous(
            memory_format=torch.channels_last)
        # channels_last weights, as in the models: a one-channel map is laid out both ways,
        # and a contiguous weight would then take the slower contiguous convolution
        convs = {padding: make_conv(in_channels, out_channels, padding).to(
            device=device, memory_format=torch.channels_last) for padding in PADDINGS}
        weight = convs["zeros"].weight
        calls = {padding: conv_call(conv, x, grad, conv.weight)
                 for padding, conv in convs.items()}
        calls["zero-padded copy"] = conv_call(
            lambda x, weight=weight: F.conv2d(F.pad(x, (1, 1, 1, 1)), weight), x, grad, weight)
        times = interleaved_times(calls, rounds=rounds, min_run_time=min_run_time, timer=timer)
        base = times["zeros"]
        rows.append({"conv": f"{in_channels}->{out_channels} on {side}x{side}",
                     "all_taps_ratio": all_taps_ratio(side), "zeros_us": base * 1e6,
                     **{f"{name}_vs_zeros": t / base for name, t in times.items()
                        if name != "zeros"}})
    return pd.DataFrame(rows)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--thread-time", action="store_true",
                        help="time in the thread's CPU time (CPU, one thread), not wall time")


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], add_arguments)
    device = setup(args)
    if args.thread_time and (device.type != "cpu" or torch.get_num_threads() != 1):
        raise SystemExit("--thread-time counts one thread's CPU time: use it with --device cpu "
                         "--threads 1")
    timer = thread_time_block if args.thread_time else time_block
    canvas, _ = study_digits_input()
    variants = QUICK_VARIANTS if args.quick else VARIANTS
    rounds, min_run_time = (3, 0.3) if args.quick else (5, 0.5)
    with watch_contention():
        steps = step_table(variants, canvas, device, rounds, min_run_time, timer)
        layers = layer_table(variants, canvas, device, rounds, min_run_time, timer)
        convs = conv_table(canvas, device, rounds, min_run_time, timer)
    table = steps.merge(layers, on="variant", how="outer")
    order = [*steps["variant"], *(v for v in layers["variant"] if v not in set(steps["variant"]))]
    table = table.set_index("variant").loc[order].reset_index()
    clock = "thread CPU time" if args.thread_time else "wall time"
    print(f"\nbatch {BATCH}, 1x{canvas}x{canvas} input, float32 on {device}, channels_last; "
          f"{clock}, best of {rounds} alternating rounds (each a median). step: forward, "
          "loss, backward and fused Adam under deterministic mode; *_vs_plain: the same head's "
          "max/zeros step in the same rounds. layer: the first downsampling layer alone (16 "
          "channels), forward and backward, against a 2x2 max-pool.")
    print_table(table.round({c: 2 for c in table.columns if c.endswith(("_ms", "_vs_plain",
                                                                        "_vs_max_pool"))}
                            | {"layer_us": 1}))
    print("\nThe backbone's convolutions alone, forward and backward, against the same one "
          "padding inside (zeros); all_taps_ratio: the multiplications a convolution does that "
          "reads every tap, over those of one skipping the taps on its own zero padding.")
    print_table(convs.round(2).round({"zeros_us": 0}))


if __name__ == "__main__":
    main()
