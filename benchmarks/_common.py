"""Helpers shared by the benchmark scripts: arguments, machine description, timing, tables.

The scripts run on shared, noisy machines, so every comparison here is made robust the same
way: the compared variants are timed in alternating order over several rounds (a slow spell
hits all of them, not one), each round takes the median of its blocks, and the result is the
best (lowest) of the rounds' medians. Sharing the cores only ever adds time, and it adds a
lot: an OpenMP region waits for its thread that another process has descheduled, so a
contended round can be many times slower; the best round is the one least disturbed.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import torch

from gap_study.pipeline.params import load_params
from gap_study.pipeline.runtime import resolve_device
from gap_study.stages.speed import alternate, time_block

PARAMS_FILE = Path(__file__).resolve().parents[1] / "params.yaml"


def study_digits_input() -> tuple[int, int]:
    """``(canvas, digits_size)`` of the digits set in the project's ``params.yaml``: the
    benchmarks time the input the default study trains on."""
    data = load_params(PARAMS_FILE).data
    return data.canvas["digits"], data.digits_size


def parse_args(description: str,
               add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
               ) -> argparse.Namespace:
    """The common options (``--quick``, ``--device``, ``--threads``) plus a script's own."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="fewer cases and rounds: a smoke run of about 15 seconds")
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when present, else CPU), cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads (default: torch's own choice)")
    if add_arguments is not None:
        add_arguments(parser)
    return parser.parse_args()


def setup(args: argparse.Namespace) -> torch.device:
    """Apply ``--threads``, settle the allocator, resolve ``--device`` and print what the
    numbers were measured on."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    settle_allocator()
    device = resolve_device(args.device)
    print(describe_machine(device))
    return device


def settle_allocator() -> None:
    """Allocate and free one 30 MiB block, as any long-running process soon does.

    glibc's malloc serves blocks over its mmap threshold (128 KiB at start) with fresh pages
    from the kernel, faulted in on first touch, until a freed block raises the threshold (up
    to 32 MiB). Until then every temporary of an op over 128 KiB costs page faults: on the
    development VM that made the same op up to 6x slower from one process to the next.
    """
    torch.empty(30 * 2**20, dtype=torch.uint8)


def describe_machine(device: torch.device) -> str:
    """One line: torch version, device, thread count, CPU and load (the machine may be shared)."""
    if device.type == "cuda":
        where = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        where = f"CPU {_cpu_model()}"
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return (f"torch {torch.__version__} | {where} | {torch.get_num_threads()} threads of "
            f"{os.cpu_count()} cores | load average {load} | Python {platform.python_version()}")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@contextmanager
def watch_contention() -> Iterator[None]:
    """After the block, print how much CPU other processes took while it ran (Linux only).

    Other processes' share is the machine's busy time (``/proc/stat``) less this process's own.
    """
    before = _busy_seconds(), os.times(), time.perf_counter()
    yield
    after = _busy_seconds(), os.times(), time.perf_counter()
    if before[0] is None or after[0] is None:
        return
    own = (after[1].user + after[1].system) - (before[1].user + before[1].system)
    cores = os.cpu_count() or 1
    others = max(0.0, (after[0] - before[0] - own) / ((after[2] - before[2]) * cores))
    note = (" Timings are inflated and noisy; interleaving keeps the ratios fairer than the "
            "absolute numbers. Rerun on a quiet machine for numbers to quote."
            if others > 0.1 else "")
    print(f"\nOther processes used {100 * others:.0f}% of the {cores} cores during this run.{note}")


def _busy_seconds() -> float | None:
    """Seconds of CPU time all processes have used since boot (``None`` off Linux)."""
    try:
        with open("/proc/stat") as fh:
            fields = [int(v) for v in fh.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")  # steal included, guest not


def calls_per_block(fn: Callable[[], object], block_seconds: float) -> tuple[int, float]:
    """How many calls make a block of about ``block_seconds`` (at least one), and the seconds
    of one call. The calls made to find out also warm ``fn`` up."""
    fn()  # untimed: a first call pays one-time costs (kernel selection, allocations)
    number = 1
    while True:
        seconds = time_block(fn, number) * number
        if seconds >= block_seconds / 2 or number >= 10**7:
            return number, seconds / number
        number = max(2 * number, round(number * block_seconds / max(seconds, 1e-9) / 2))


def thread_time_block(fn: Callable[[], object], number: int) -> float:
    """Thread CPU seconds per call of ``fn`` over one block of ``number`` calls: the time this
    thread ran, which other processes sharing the cores inflate far less than wall time (not
    to nothing: they share the caches). CPU only, and one torch thread: other threads' time
    is not counted."""
    start = time.thread_time()
    for _ in range(number):
        fn()
    return (time.thread_time() - start) / number


def interleaved_times(fns: Mapping[str, Callable[[], object]], *, rounds: int,
                      min_run_time: float, blocks: int = 5,
                      timer: Callable[[Callable[[], object], int], float] = time_block,
                      ) -> dict[str, float]:
    """Seconds per call of each of ``fns``: the best round's median, over ``rounds`` rounds
    timed in alternating order (reversed every other round, so that neither warm-up nor a slow
    spell of the machine favours the variant that always comes first). Each round times
    ``blocks`` blocks of each variant, about ``min_run_time`` seconds in all; a variant whose
    single call takes longer gets fewer blocks, at least one. ``timer`` times a block: wall
    time (``time_block``) or ``thread_time_block``."""
    plans = {}
    for name, fn in fns.items():
        number, per_call = calls_per_block(fn, min_run_time / blocks)
        plans[name] = number, max(1, min(blocks, round(min_run_time / (number * per_call))))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for r in range(rounds):
        for name in alternate(list(fns), r):
            number, n_blocks = plans[name]
            samples[name].append(statistics.median(
                timer(fns[name], number) for _ in range(n_blocks)))
    return {name: min(values) for name, values in samples.items()}


def print_table(df: pd.DataFrame, floatfmt: str = ".3g") -> None:
    """Print ``df`` as a Markdown table (plain text if ``tabulate`` is missing)."""
    try:
        print(df.to_markdown(index=False, floatfmt=floatfmt))
    except ImportError:
        print(df.to_string(index=False))
