"""The Dask engine: the same results in this process and on a local cluster, threads per run,
retries, and a clear error for a scheduler that is not there."""

import contextlib
import os
import signal
import socket
import time
import warnings

import numpy as np
import pytest
import torch
from builders import TINY_MODEL, free_port

import gap_study.pipeline.engine as engine_module
from gap_study.pipeline.engine import EngineError, _warn_about_trimming, local_workers, open_engine
from gap_study.pipeline.params import ComputeParams, TrainParams
from gap_study.pipeline.paths import RunId
from gap_study.stages.train import train_task


def _compute(scheduler="synchronous", threads=1, workers=None):
    return ComputeParams(scheduler=scheduler, threads_per_run=threads, workers=workers)


def _threads_and_item(item, *, offset):
    return torch.get_num_threads(), item + offset


def test_synchronous_tasks_run_in_order_with_their_threads_and_restore_ours():
    before = torch.get_num_threads()
    with open_engine(_compute(threads=3)) as engine:
        results = engine.map(_threads_and_item, [5, 1, 7], shared={"offset": 10}, name="t")
    assert results == [(3, 15), (3, 11), (3, 17)]
    assert torch.get_num_threads() == before


def _fails_the_first_time(marker):
    """Raises unless ``marker`` exists, creating it: the first try fails, a retry passes, in
    whichever worker process it runs."""
    if not marker.exists():
        marker.touch()
        raise RuntimeError("a passing failure")
    return "passed"


def test_local_cluster_gives_the_same_bytes_as_this_process_and_retries_a_failed_task(
        small, tmp_path):
    settings = TrainParams(seeds=[0, 1], epochs=1, batch_size=64, schedule="cosine",
                           drop_last=True, weight_decay=0.0, validation_batch_size=512,
                           fractions=[1.0], shift=[0, 2])
    runs = [("gmp", RunId(1.0, 0, 0)), ("dense", RunId(1.0, 2, 1))]
    architecture = TINY_MODEL
    shared = {"data": small.without_test(), "architecture": architecture,
              "settings": settings, "learning_rates": {"gmp": 0.01, "dense": 0.003},
              "device": "cpu"}
    outputs = {}
    for scheduler in ("synchronous", "local"):
        with open_engine(_compute(scheduler, workers=2)) as engine:
            outputs[scheduler] = engine.map(train_task, runs, shared=shared, name="train",
                                            label=lambda item: f"{item[0]}-{item[1].stem}")
            if scheduler == "local":
                workers = len(engine.client.scheduler_info()["workers"])
                trim = engine.client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
                retried = engine.map(_fails_the_first_time, [tmp_path / "marker"], shared={},
                                     name="flaky")
    for local, sync in zip(outputs["local"], outputs["synchronous"], strict=True):
        assert local.checkpoint["config"] == sync.checkpoint["config"]
        assert all(torch.equal(local.checkpoint["state_dict"][k], v)
                   for k, v in sync.checkpoint["state_dict"].items())
        columns = ["epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
        assert local.history[columns].equals(sync.history[columns])
        assert local.worker["torch_threads"] == 1
    assert workers == 2 and retried == ["passed"]
    assert set(trim.values()) == {None}  # glibc keeps its heap: see engine.MALLOC_TRIM


def _dies_the_first_time(item, *, marker, offset):
    """Kills its worker process unless ``marker`` exists, creating it."""
    if not marker.exists():
        marker.touch()
        os.kill(os.getpid(), signal.SIGKILL)
    return item + offset


def test_a_worker_that_dies_holding_the_shared_values_is_replaced_and_they_are_sent_again(
        tmp_path):
    # one worker: it holds every shared value when it dies, so they must come back
    with open_engine(_compute("local", workers=1)) as engine:
        results = engine.map(_dies_the_first_time, [1, 2],
                             shared={"marker": tmp_path / "marker", "offset": 10}, name="dies")
    assert results == [11, 12]


def _total(item, scale):
    return float(np.sum(item) * np.sum(scale))


def test_items_and_shared_values_over_dask_s_large_graph_size_go_out_without_its_warning():
    # a 12 MiB item per task (a checkpoint) and a 12 MiB shared value (the data set) each
    # travel once: Dask's warning, meant for data repeated in every task, would be noise
    big = np.ones(3_200_000, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning fails the test
        with open_engine(_compute("local", workers=1)) as engine:
            results = engine.map(_total, [big, 2 * big], shared={"scale": 1.0}, name="big")
            shared = engine.map(_total, [1.0], shared={"scale": big}, name="big-shared")
    assert results == [3_200_000.0, 6_400_000.0] and shared == [3_200_000.0]


def _started_at(item):
    return item, time.monotonic()  # one clock for every process of this machine


@pytest.mark.parametrize("scheduler", ["synchronous", "local"])
def test_tasks_start_costliest_first_and_come_back_in_the_items_order(scheduler):
    # one label for every item: each is still its own task
    items = [3, 9, 1, 7, 5]
    with open_engine(_compute(scheduler, workers=1)) as engine:
        results = engine.map(_started_at, items, shared={}, name="order",
                             label=lambda item: "one label", cost=lambda item: item)
    assert [item for item, _ in results] == items
    started = [item for item, _ in sorted(results, key=lambda result: result[1])]
    assert started == sorted(items, reverse=True)


def test_the_local_cluster_needs_no_free_port_8787():
    # Dask's HTTP servers default to port 8787, often another cluster's dashboard
    with contextlib.ExitStack() as stack:
        taken = stack.enter_context(socket.socket())
        with contextlib.suppress(OSError):  # something else holds it already: as good
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        caught = stack.enter_context(warnings.catch_warnings(record=True))
        warnings.simplefilter("always")
        with open_engine(_compute("local", workers=1)) as engine:
            port = engine.client.scheduler_info()["services"]["dashboard"]
            assert engine.map(abs, [-2], shared={}, name="abs") == [2]
    assert port != 8787
    assert not [warning for warning in caught if "already in use" in str(warning.message)]


def _pid_and_interrupt_handler():
    return os.getpid(), str(signal.getsignal(signal.SIGINT))


def test_a_ctrl_c_to_the_kernels_process_group_leaves_the_local_workers_running():
    # an interrupt of a stage's kernel is a SIGINT to its process group, the workers' too:
    # the kernel's KeyboardInterrupt closes the cluster, and no worker dies of its own
    before = signal.getsignal(signal.SIGINT)
    with open_engine(_compute("local", workers=2)) as engine:
        assert signal.getsignal(signal.SIGINT) is before  # this process's own, unchanged
        workers = engine.client.run(_pid_and_interrupt_handler)
        assert {handler for _, handler in workers.values()} == {str(signal.SIG_IGN)}
        for pid, _ in workers.values():
            os.kill(pid, signal.SIGINT)
        time.sleep(1)
        assert engine.map(abs, [-2, 3], shared={}, name="abs") == [2, 3]
        assert engine.client.run(_pid_and_interrupt_handler) == workers  # none restarted


def test_an_address_where_no_scheduler_answers_fails_at_once_naming_it(monkeypatch):
    # Dask retries the connection until the timeout: a second here, CONNECT_TIMEOUT in a stage
    monkeypatch.setattr(engine_module, "CONNECT_TIMEOUT", "1s")
    address = f"tcp://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(EngineError) as error, open_engine(_compute(address)):
        pytest.fail("the engine opened")
    assert time.monotonic() - start < 10
    message = str(error.value)
    assert address in message and "dask scheduler" in message and "local" in message


def test_the_local_cluster_has_one_worker_per_threads_per_run_cores_unless_told(monkeypatch):
    import dask.system

    monkeypatch.setattr(dask.system, "CPU_COUNT", 8)
    assert local_workers(_compute("local", threads=1)) == 8
    assert local_workers(_compute("local", threads=3)) == 2
    assert local_workers(_compute("local", threads=16)) == 1
    assert local_workers(_compute("local", threads=2, workers=5)) == 5


class _Workers:
    """A client whose workers' environments are ``environ`` (one dict per worker)."""

    def __init__(self, *environ):
        self.environ = environ

    def run(self, fn, *args):
        assert fn == os.environ.get  # what the engine asks every worker
        return {f"tcp://w{i}": env.get(*args) for i, env in enumerate(self.environ)}


def test_workers_that_trim_the_heap_are_warned_about_and_others_are_not(capsys):
    _warn_about_trimming(_Workers({}, {"MALLOC_TRIM_THRESHOLD_": "65536"}), "tcp://h:8786")
    warning = capsys.readouterr().err
    assert "1 worker(s) of tcp://h:8786 run with MALLOC_TRIM_THRESHOLD_=65536" in warning
    assert "MALLOC_TRIM_THRESHOLD_=None" in warning
    _warn_about_trimming(_Workers({}, {}), "tcp://h:8786")
    assert capsys.readouterr().err == ""
