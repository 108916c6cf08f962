"""What the mechanism factors cost: the backbone's downsampling (``max``, ``blurmax`` with
filter 3 or 5) and its padding (``zeros``, ``circular``, ``reflect``), timed as one training
step of the default study's ``gap`` model, and the downsampling layer alone.

Each variant is timed in alternating rounds (best round's median) against the study's default
(``max``, ``zeros``); kornia's ``MaxBlurPool2D`` (zero padding, no padding of the max) is the
library reference for the layer alone.

    python benchmarks/bench_downsample.py [--quick] [--device cpu]
"""

from __future__ import annotations

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
    watch_contention,
)
from kornia.filters import MaxBlurPool2D

from gap_study.nets.architecture import BLUR_SIZES, PADDINGS, ModelConfig
from gap_study.nets.downsample import make_downsample
from gap_study.nets.models import build_model

BATCH = 64
VARIANTS = [("max", 3, padding) for padding in PADDINGS] + [
    ("blurmax", size, padding) for size, padding in itertools.product(BLUR_SIZES, PADDINGS)]
QUICK_VARIANTS = [("max", 3, "zeros"), ("blurmax", 3, "zeros"), ("blurmax", 3, "circular")]


def training_step(downsample: str, blur_size: int, padding: str, canvas: int,
                  device: torch.device) -> Callable[[], None]:
    """Forward, cross-entropy and backward of the default ``gap`` model on one batch."""
    torch.manual_seed(0)
    config = ModelConfig(head="gap", in_channels=1, image_size=canvas, num_classes=10,
                         downsample=downsample, blur_size=blur_size, padding=padding)
    model = build_model(config).to(device).train()
    images = torch.rand(BATCH, 1, canvas, canvas, device=device)
    labels = torch.randint(0, 10, (BATCH,), device=device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(images), labels).backward()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    return step


def layer_call(layer: torch.nn.Module, x: torch.Tensor) -> Callable[[], None]:
    """Forward and backward of one downsampling layer."""
    def call() -> None:
        x.grad = None
        layer(x).sum().backward()
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)
    return call


def label(downsample: str, blur_size: int, padding: str) -> str:
    return f"{downsample}{blur_size if downsample == 'blurmax' else ''}/{padding}"


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = setup(args)
    canvas, _ = study_digits_input()
    variants = QUICK_VARIANTS if args.quick else VARIANTS
    rounds, min_run_time = (3, 0.3) if args.quick else (5, 0.5)

    steps = {label(*v): training_step(*v, canvas, device) for v in variants}
    # the first downsampling layer's input: 16 channels at the canvas's size
    x = torch.rand(BATCH, 16, canvas, canvas, device=device, requires_grad=True)
    layers = {label(*v): layer_call(make_downsample(v[0], 16, v[1], v[2]).to(device), x)
              for v in variants}
    layers["kornia MaxBlurPool2D(3)/zeros"] = layer_call(MaxBlurPool2D(3).to(device), x)
    with watch_contention():
        step_times = interleaved_times(steps, rounds=rounds, min_run_time=min_run_time)
        layer_times = interleaved_times(layers, rounds=rounds, min_run_time=min_run_time)

    base = label("max", 3, "zeros")
    table = pd.DataFrame([
        {"variant": name, "step_ms": step_times[name] * 1e3,
         "step_vs_max_zeros": step_times[name] / step_times[base],
         "layer_us": layer_times[name] * 1e6,
         "layer_vs_max_zeros": layer_times[name] / layer_times[base]}
        for name in steps])
    extra = "kornia MaxBlurPool2D(3)/zeros"
    table.loc[len(table)] = {"variant": extra, "layer_us": layer_times[extra] * 1e6,
                             "layer_vs_max_zeros": layer_times[extra] / layer_times[base]}
    print(f"\ngap model, batch {BATCH}, 1x{canvas}x{canvas} input, float32 on {device}; "
          f"best of {rounds} alternating rounds (each a median). step: forward, loss and "
          "backward; layer: the first downsampling layer alone (16 channels), forward and "
          "backward.")
    print_table(table.round({"step_ms": 2, "step_vs_max_zeros": 2, "layer_us": 1,
                             "layer_vs_max_zeros": 2}))


if __name__ == "__main__":
    main()
