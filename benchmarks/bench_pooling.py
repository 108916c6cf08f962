"""Time each ``gap_study.nets.pooling`` op against the torch formulations that compute the same
thing.

For every op, shape, memory layout and pass (forward; forward + backward) the table gives our
op's time, the fastest torch form's, which form that was, ``ratio = ours / fastest`` and
``ratio_drop_in``, the same against the fastest form that could replace ours (in training, a
form with a different gradient at tied maxima, ``*``, or without a deterministic CUDA
backward, ``†``, could not). The requirement is a ratio of at most 1.10; a case above it is
timed again, longer, before it is flagged, so a noisy moment does not flag it. Each torch
form is first checked to give our values. Exit status is always 0.

    python benchmarks/bench_pooling.py [--quick] [--device cpu] [--threads 2]
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from dataclasses import dataclass

import pandas as pd
import torch
import torch.nn.functional as F
from _common import interleaved_times, parse_args, print_table, setup, watch_contention
from torch import Tensor

from gap_study.nets.pooling import (
    global_avg_pool,
    global_avgmax_pool,
    global_gem_pool,
    global_lse_pool,
    global_max_pool,
    global_sum_pool,
)

LIMIT = 1.10
SHAPES = [(64, 64, 8, 8), (128, 64, 8, 8), (512, 64, 4, 4), (256, 2048, 7, 7)]
QUICK_SHAPES = [(64, 64, 8, 8), (512, 64, 4, 4)]
LAYOUTS = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
GEM_P, LSE_R = 3.0, 10.0  # the study's defaults (params.yaml, model.gem_p and model.lse_r)

# Marks on the names of torch forms that are no drop-in replacement for ours.
DIFFERENT_TIES = "*"  # gives a tied maximum's whole gradient to one position (ours splits it)
NONDETERMINISTIC = "†"  # backward raises on CUDA under torch.use_deterministic_algorithms
FOOTNOTE = (f"{DIFFERENT_TIES} gradient at tied maxima differs from ours (all to one position); "
            f"{NONDETERMINISTIC} backward has no deterministic CUDA kernel (raises in the study's "
            "deterministic mode). In fwd+bwd such forms cannot replace ours; they are timed for "
            "reference.")

Pool = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Op:
    """One pooling op: ours, and the torch forms giving the same ``(N, C')`` values."""

    name: str
    ours: Pool
    torch_forms: dict[str, Pool]
    extra_inputs: tuple[Tensor, ...] = ()  # parameters the backward pass also reaches


def make_ops(p: Tensor) -> list[Op]:
    """The ops to compare; ``p`` is gem's exponent (a tensor, as ``GeMPool2d`` learns it)."""
    def gem_avg_pool2d(x: Tensor) -> Tensor:  # the reference GeM code (Radenovic et al.)
        return F.avg_pool2d(x.clamp(min=1e-6).pow(p), x.shape[-2:]).pow(1.0 / p).flatten(1)

    def lse_shifted(x: Tensor) -> Tensor:  # the textbook max-shifted form
        m = x.amax(dim=(2, 3), keepdim=True)
        return (m + torch.log(torch.exp(LSE_R * (x - m)).mean(dim=(2, 3), keepdim=True))
                / LSE_R).flatten(1)

    return [
        Op("gap", global_avg_pool, {
            "adaptive_avg_pool2d": lambda x: F.adaptive_avg_pool2d(x, 1).flatten(1),
            "avg_pool2d(HxW)": lambda x: F.avg_pool2d(x, x.shape[-2:]).flatten(1),
            "mean((2,3))": lambda x: x.mean(dim=(2, 3)),
        }),
        Op("gmp", global_max_pool, {
            "adaptive_max_pool2d*†": lambda x: F.adaptive_max_pool2d(x, 1).flatten(1),
            "max_pool2d(HxW)*": lambda x: F.max_pool2d(x, x.shape[-2:]).flatten(1),
            "amax((2,3))": lambda x: x.amax(dim=(2, 3)),
        }),
        Op("gsp", global_sum_pool, {
            "sum((2,3))": lambda x: x.sum(dim=(2, 3)),
        }),
        Op("gem", lambda x: global_gem_pool(x, p), {
            "avg_pool2d(clamp.pow)": gem_avg_pool2d,
            "adaptive_avg_pool2d(clamp.pow)":
                lambda x: F.adaptive_avg_pool2d(x.clamp(min=1e-6).pow(p), 1).pow(1.0 / p)
                .flatten(1),
        }, extra_inputs=(p,) if p.requires_grad else ()),
        Op("lse", lambda x: global_lse_pool(x, LSE_R), {
            "logsumexp((2,3))": lambda x: (torch.logsumexp(LSE_R * x, dim=(2, 3))
                                           - math.log(x.shape[2] * x.shape[3])) / LSE_R,
            "max-shifted exp": lse_shifted,
        }),
        Op("avgmax", global_avgmax_pool, {
            "cat(adaptive avg, max)*†": lambda x: torch.cat(
                [F.adaptive_avg_pool2d(x, 1), F.adaptive_max_pool2d(x, 1)], dim=1).flatten(1),
            "cat(mean, amax)": lambda x: torch.cat([x.mean(dim=(2, 3)), x.amax(dim=(2, 3))], 1),
        }),
    ]


def timed_call(fn: Pool, x: Tensor, extra_inputs: tuple[Tensor, ...], backward: bool
               ) -> Callable[[], object]:
    """A no-argument call running ``fn`` forward (and backward into ``x`` and the extras)."""
    if not backward:
        return lambda: fn(x)
    inputs = (x, *extra_inputs)
    grad_out = torch.ones_like(fn(x))
    # autograd.grad, not .backward(): nothing accumulates into .grad between calls.
    return lambda: torch.autograd.grad(fn(x), inputs, grad_out)


def check_same_values(op: Op, x: Tensor) -> None:
    """Every torch form must compute our op's values, or the comparison means nothing."""
    with torch.no_grad():
        expected = op.ours(x)
        for form, fn in op.torch_forms.items():
            torch.testing.assert_close(fn(x), expected, rtol=1e-4, atol=1e-5,
                                       msg=lambda m, f=form: f"{op.name} vs {f}: {m}")


def is_drop_in(form: str) -> bool:
    """Whether a torch form could replace ours in training: the same gradient, and a
    deterministic backward everywhere."""
    return DIFFERENT_TIES not in form and NONDETERMINISTIC not in form


def time_case(op: Op, x: Tensor, backward: bool, rounds: int, min_run_time: float) -> dict:
    """One table row: our time, the fastest torch form's (any, and drop-in), and the ratios."""
    calls = {"ours": timed_call(op.ours, x, op.extra_inputs, backward)}
    calls |= {form: timed_call(fn, x, op.extra_inputs, backward)
              for form, fn in op.torch_forms.items()}
    times = interleaved_times(calls, rounds=rounds, min_run_time=min_run_time)
    ours = times.pop("ours")
    fastest = min(times, key=times.__getitem__)
    # Without a backward pass, ties and backward kernels do not matter: every form is drop-in.
    drop_in = min((f for f in times if not backward or is_drop_in(f)), key=times.__getitem__)
    return {"ours_us": ours * 1e6, "fastest_us": times[fastest] * 1e6, "fastest_form": fastest,
            "ratio": ours / times[fastest], "ratio_drop_in": ours / times[drop_in]}


def run_cases(shapes: list[tuple[int, ...]], device: torch.device, rounds: int,
              min_run_time: float) -> pd.DataFrame:
    """Every op x shape x layout x pass; a case over ``LIMIT`` is timed again, longer, and
    keeps the second timing (a first one over the limit is often a noisy moment)."""
    rows = []
    generator = torch.Generator().manual_seed(0)
    for shape in shapes:
        base = torch.randn(shape, generator=generator).to(device)
        print(f"timing {'x'.join(map(str, shape))} ...", file=sys.stderr, flush=True)
        for layout, memory_format in LAYOUTS.items():
            for backward in (False, True):
                x = base.clone(memory_format=memory_format).requires_grad_(backward)
                p = torch.tensor(GEM_P, device=device, requires_grad=backward)
                for op in make_ops(p):
                    if not backward:
                        check_same_values(op, x)
                    row = time_case(op, x, backward, rounds, min_run_time)
                    retimed = row["ratio"] > LIMIT
                    if retimed:
                        row = time_case(op, x, backward, 3 * rounds, 2 * min_run_time)
                    rows.append({"op": op.name, "shape": "x".join(map(str, shape)),
                                 "layout": layout, "pass": "fwd+bwd" if backward else "fwd",
                                 **row, "retimed": retimed})
    return pd.DataFrame(rows)


def main() -> None:
    args = parse_args(__doc__.splitlines()[0])
    device = setup(args)
    shapes = QUICK_SHAPES if args.quick else SHAPES
    rounds, min_run_time = (2, 0.01) if args.quick else (3, 0.03)
    table = run_cases(shapes, device, rounds, min_run_time)
    print(f"\nfloat32 on {device}; best of {rounds} alternating rounds (each a median); "
          f"ratio = ours / fastest torch form, ratio_drop_in = ours / fastest form that "
          f"could replace ours (in fwd+bwd, one without a mark); limit {LIMIT}\n")
    print_table(table.round({"ours_us": 1, "fastest_us": 1, "ratio": 2, "ratio_drop_in": 2}),
                floatfmt="g")
    print(f"\n{FOOTNOTE}\n")
    print(verdict(table))


def verdict(table: pd.DataFrame) -> str:
    """The one-line verdict: which cases exceed ``LIMIT``, and against which kind of form."""
    over = table[table.ratio > LIMIT]
    if over.empty:
        worst = table.loc[table.ratio.idxmax()]
        return (f"VERDICT: PASS, every op is within {LIMIT}x of the fastest torch form "
                f"(worst {worst.ratio:.2f}x: {_case(worst)}).")
    over_drop_in = over[over.ratio_drop_in > LIMIT]
    cases = "; ".join(f"{_case(row)} {row.ratio:.2f}x vs {row.fastest_form}"
                      for _, row in over.iterrows())
    return (f"VERDICT: {len(over)} case(s) over {LIMIT}x after re-timing, "
            f"{len(over_drop_in)} of them against a drop-in form: {cases}")


def _case(row: pd.Series) -> str:
    return f"{row['op']} {row['shape']} {row['layout']} {row['pass']}"


if __name__ == "__main__":
    with watch_contention():
        main()
