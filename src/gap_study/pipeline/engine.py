"""Runs as tasks on Dask (``dask.distributed``): each training or evaluation run of a stage is
one task, whatever computes it.

``compute.scheduler`` in ``params.yaml`` says where: ``local`` starts a ``LocalCluster`` of
single-threaded worker processes for the stage and stops it after; ``synchronous`` runs every
task in this process, one after another (for debugging, or a notebook run cell by cell); an
address (``tcp://host:8786``, ``tls://host:8786``) connects to a running scheduler, e.g. one a
SLURM or Kubernetes cluster started (docs/operations.md, "Scaling out"); a ``tls://`` address
takes its certificates from Dask's config (``distributed.comm.tls.*``).

Every task seeds itself and runs with ``compute.threads_per_run`` torch threads, so a run
gives the same bytes on any worker of any scheduler; the stage writes what the tasks return,
and may have each result kept on disk as it returns (``gap_study.pipeline.kept``), so that a
stage started again computes only the runs it lacks. A worker that dies mid-task is replaced
and its task run again (Dask's own rescheduling), the values every task shares included, and
a task that raises is retried once before the stage fails. One progress bar per stage counts
the runs (``gap_study.pipeline.progress``), beside a log line per finished run.
"""

from __future__ import annotations

import itertools
import logging
import os
import signal
import sys
import threading
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import dask

from gap_study.pipeline.params import ComputeParams
from gap_study.pipeline.progress import StageProgress
from gap_study.pipeline.runtime import torch_threads

if TYPE_CHECKING:
    from gap_study.pipeline.kept import KeptRuns

__all__ = ["Engine", "EngineError", "local_workers", "open_engine"]

T = TypeVar("T")
R = TypeVar("R")
CONNECT_TIMEOUT = "10s"  # how long to try to reach a scheduler before failing the stage
RETRIES = 1  # a task that raises runs once more before the stage fails
# Dask's nannies start workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand every
# freed block over 64 KiB back to the kernel (and stops it from adapting its mmap threshold):
# each temporary of a training step then costs fresh page faults, several times the step's
# arithmetic (benchmarks/README.md, "Dask workers"). The local cluster's workers start without
# it; for other clusters docs/operations.md, "Scaling out", says how, and the engine warns.
MALLOC_TRIM = "MALLOC_TRIM_THRESHOLD_"


class EngineError(RuntimeError):
    """The runs cannot be computed where ``compute`` says: the message names the scheduler
    and what to do."""


def local_workers(settings: ComputeParams) -> int:
    """Worker processes of the local cluster (``ComputeParams.local_workers``)."""
    return settings.local_workers()


# Dask warns about a task graph over 10 MB, meant for data repeated in every task. Nothing
# here is: the shared values go out once per stage, and a task's own item (an evaluated
# checkpoint: 12 MiB for `dense` on mnist_5k's 40-pixel canvas) once per task.
_SENT_ONCE = {"distributed.admin.large-graph-warning-threshold": "1TB"}


def _shared_value(value: T) -> T:
    """A value every task of a stage needs, as a task's result (``Engine.map``, 2.)."""
    return value


def _with_threads(fn: Callable[..., R], threads: int, *args: Any, **kwargs: Any) -> R:
    """``fn(*args, **kwargs)`` with ``threads`` torch threads, as every task runs."""
    with torch_threads(threads):
        return fn(*args, **kwargs)


@dataclass
class Engine:
    """Where a stage's tasks run: a Dask ``client``, or this process when it is ``None``.
    ``window``: how many tasks may be on the workers at once (``None``: all of them).
    ``progress``: the stage's progress bar, one for all its ``map`` calls."""

    client: Any  # distributed.Client | None
    threads_per_run: int
    window: int | None = None
    progress: StageProgress | None = None

    def map(self, fn: Callable[..., R], items: Sequence[T], *, shared: Mapping[str, Any],
            name: str, label: Callable[[T], str] = str,
            cost: Callable[[T], float] | None = None, keep: KeptRuns[R] | None = None,
            size: Callable[[T], int] | None = None) -> list[R]:
        """``[fn(item, **shared) for item in items]``, one task per item, results in ``items``'
        order.

        ``shared`` (the data set, settings) goes to every worker once, not once per task;
        ``name`` and ``label(item)`` name the tasks, the progress bar and the log lines;
        ``cost(item)`` (any comparable estimate; default: the items' order) decides which
        tasks start first: the costliest. With ``keep``, each result is kept on disk as its
        task returns, and results kept by an earlier, unfinished attempt are reused instead of
        computed (``gap_study.pipeline.kept``); ``size(item)``: the bytes its result and output
        take, checked against the free disk space before any task starts.

        1. Costliest first, and on a local cluster each task handed out only when a worker
           is free (``window``): submitted all at once, Dask assigns every task to a worker
           up front and the workers may end a long task apart (once 4.9 s in the tune stage,
           ``benchmarks/README.md``, "Dask workers"); handed out one by one, longest first,
           the last tasks are short and the workers finish together. Dask's ``priority``
           carries the order to any other scheduler.
        4. A task that fails (after its retry) stops the handing out: the tasks already out
           finish and are kept, then the first failure is raised.
        """
        order = (sorted(range(len(items)), key=lambda i: cost(items[i]), reverse=True)
                 if cost is not None else list(range(len(items))))
        if self.progress is None:
            self.progress = StageProgress(name)
        progress = self.progress
        keys = [] if keep is None else keep.keys(fn, items, shared, self.threads_per_run)
        results = [None if keep is None else keep.load(keys[i]) for i in range(len(items))]
        todo = [i for i in order if results[i] is None]
        reused = len(items) - len(todo)
        if keep is not None:
            while keep.notes:
                progress.line(f"{name}: {keep.notes.pop(0)}")
            if reused:
                progress.line(f"{name}: {reused} of {len(items)} runs reused, kept by an "
                              f"attempt that did not finish ({keep.folder}); computing "
                              f"{len(todo)}")
            if size is not None:
                keep.require_space([size(items[i]) for i in todo], [size(it) for it in items])
        progress.add(len(items), reused)
        count = itertools.count(reused + 1)

        def finished(i: int, result: Any) -> None:
            if keep is not None:
                keep.save(keys[i], result, label(items[i]))
            results[i] = result
            progress.line(f"{name}: {label(items[i])} done ({next(count)}/{len(items)})")

        compute = self._here if self.client is None else self._on_cluster
        failures = compute(fn, items, todo, shared, name, label, finished)
        if failures:
            (label_, error), kept = failures[0], "are kept" if keep is not None else "are lost"
            progress.line(f"{name}: {len(failures)} run(s) failed, the first {label_}: "
                          f"{type(error).__name__}: {error}; the finished runs {kept}")
            raise error
        return results

    def _here(self, fn: Callable[..., Any], items: Sequence[Any], todo: list[int],
              shared: Mapping[str, Any], name: str, label: Callable[[Any], str],
              finished: Callable[[int, Any], None]) -> list[tuple[str, Exception]]:
        """The tasks ``todo`` one after another in this process; the first failure ends it."""
        assert self.progress is not None
        for i in todo:
            self.progress.update(running=1)
            try:
                result = _with_threads(fn, self.threads_per_run, items[i], **shared)
            except Exception as error:
                self.progress.update(running=0, failed=1)
                return [(label(items[i]), error)]
            finished(i, result)
            self.progress.update(running=0, done=1)
        return []

    def _on_cluster(self, fn: Callable[..., Any], items: Sequence[Any], todo: list[int],
                    shared: Mapping[str, Any], name: str, label: Callable[[Any], str],
                    finished: Callable[[int, Any], None]) -> list[tuple[str, Exception]]:
        """The tasks ``todo`` on the cluster, in that order of priority (``map``, 1.)."""
        from distributed import as_completed

        assert self.progress is not None
        if not todo:
            return []
        # unique keys: two stages sharing a scheduler, or two items with one label, must never
        # share a task (Dask computes a key once)
        stage = uuid.uuid4().hex[:8]
        sent = self._send_shared(shared, name, stage)
        position: dict[str, int] = {}
        slots = self.window or sum(worker["nthreads"] for worker in
                                   self.client.scheduler_info()["workers"].values())

        def submit(rank: int) -> Any:
            i = todo[rank]
            with dask.config.set(_SENT_ONCE):  # its own item (a checkpoint) travels once
                future = self.client.submit(_with_threads, fn, self.threads_per_run, items[i],
                                            **sent, key=f"{name}-{label(items[i])}-{i}-{stage}",
                                            priority=len(todo) - rank, retries=RETRIES,
                                            pure=False)
            position[future.key] = i
            return future

        window = len(todo) if self.window is None else self.window
        waiting = iter(range(len(todo)))
        running = as_completed([submit(rank) for rank in itertools.islice(waiting, window)])
        out, failures = window, []
        self.progress.update(running=min(out, slots))
        for future in running:
            # 3. the next task goes out before this one's result comes back: the freed worker
            #    waits for the scheduler alone, not for the transfer
            if not failures and (rank := next(waiting, None)) is not None:
                running.add(submit(rank))
                out += 1
            out -= 1
            i = position[future.key]
            try:
                result = future.result()
            except Exception as error:
                failures.append((label(items[i]), error))
                self.progress.update(running=min(out, slots), failed=1)
                continue
            finished(i, result)
            self.progress.update(running=min(out, slots), done=1)
        return failures

    def _send_shared(self, shared: Mapping[str, Any], name: str, stage: str) -> dict[str, Any]:
        """2. The shared values go out as tasks that return them, not scattered: scattered
        data dies with the worker that holds it (and Dask's memory manager keeps no more
        copies of it than it sees a use for), while a task's result lost with its worker is
        computed again from the spec the scheduler keeps. Each value still travels once to
        the scheduler and once to each worker that needs it; the warning about large graphs
        is for values sent once per task (``_SENT_ONCE``)."""
        with dask.config.set(_SENT_ONCE):
            return {key: self.client.submit(_shared_value, value, pure=False,
                                            key=f"shared-{name}-{key}-{stage}")
                    for key, value in shared.items()}


@contextmanager
def open_engine(settings: ComputeParams) -> Iterator[Engine]:
    """The engine ``compute`` asks for; a local cluster lives as long as the ``with`` block.

    An address that no scheduler answers raises ``EngineError`` at once, before any task.
    """
    if settings.scheduler == "synchronous":
        with _closing(Engine(None, settings.threads_per_run)) as engine:
            yield engine
        return
    from distributed import Client, LocalCluster

    if settings.scheduler == "local":
        with dask.config.set({f"distributed.nanny.pre-spawn-environ.{MALLOC_TRIM}": None}), \
                _interrupts_ignored():
            cluster = LocalCluster(n_workers=local_workers(settings), threads_per_worker=1,
                                   processes=True, host="127.0.0.1", dashboard_address=None,
                                   # no dashboard, and the scheduler's HTTP server (health
                                   # checks) on any free port: 8787 may be another cluster's
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                   silence_logs=logging.ERROR)
        with cluster, Client(cluster) as client, _closing(
                Engine(client, settings.threads_per_run, window=local_workers(settings))) as engine:
            yield engine
        return
    try:
        client = Client(settings.scheduler, timeout=CONNECT_TIMEOUT)
    except TypeError as error:
        # 5. Dask reads a TLS client's certificate from its config; without one it fails with
        #    "TLS expects a `ssl_context` argument", which does not say what to set.
        if not settings.scheduler.startswith("tls://"):
            raise
        raise EngineError(
            f"compute.scheduler = {settings.scheduler!r} is a TLS address, and Dask's config "
            "names no certificate for this client: set distributed.comm.tls.ca-file, "
            "distributed.comm.tls.client.cert and distributed.comm.tls.client.key in a Dask "
            "config file (~/.config/dask/), or as DASK_DISTRIBUTED__COMM__TLS__CA_FILE, "
            "..._CLIENT__CERT and ..._CLIENT__KEY in the environment (docs/operations.md, "
            f"\"Scaling out\"; {error})") from None
    except (OSError, TimeoutError) as error:
        raise EngineError(
            f"no Dask scheduler answers at compute.scheduler = {settings.scheduler!r} "
            f"({error}). Start one there (`dask scheduler`, then `dask worker "
            f"{settings.scheduler}` on each machine; docs/operations.md, \"Scaling out\") or set "
            "compute.scheduler to local or synchronous.") from None
    with client:
        _warn_about_trimming(client, settings.scheduler)
        with _closing(Engine(client, settings.threads_per_run)) as engine:
            yield engine


@contextmanager
def _interrupts_ignored() -> Iterator[None]:
    """SIGINT ignored in the block, for the local cluster's worker processes to inherit.

    1. An interrupt of a stage's kernel (Ctrl-C, or the runner stopping it) is a SIGINT to
       the kernel's whole process group, which holds the workers it started. Each worker
       then died with its own KeyboardInterrupt traceback on the terminal, and the nanny's
       restart and a leaked semaphore on top; the kernel's KeyboardInterrupt already closes
       the cluster, workers included. A process that starts with SIGINT ignored keeps it
       ignored (Python and asyncio leave an ignored SIGINT as it is).
    2. Main thread only, as signal handlers are; elsewhere the workers take SIGINT.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not set from Python, left as it was
            signal.signal(signal.SIGINT, previous)


@contextmanager
def _closing(engine: Engine) -> Iterator[Engine]:
    """``engine``, its progress bar left in its last state at the end."""
    try:
        yield engine
    finally:
        if engine.progress is not None:
            engine.progress.close()


def _warn_about_trimming(client: Any, address: str) -> None:
    """Say so when workers run with ``MALLOC_TRIM_THRESHOLD_`` set (Dask's default)."""
    trimming = {worker: value for worker, value in client.run(os.environ.get, MALLOC_TRIM).items()
                if value is not None}
    if trimming:
        print(f"warning: {len(trimming)} worker(s) of {address} run with {MALLOC_TRIM}="
              f"{next(iter(trimming.values()))}, which makes training several times slower; "
              "start them with DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON__MALLOC_TRIM_THRESHOLD_"
              "=None (docs/operations.md, \"Scaling out\")", file=sys.stderr, flush=True)
