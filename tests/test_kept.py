"""Runs kept as they finish (gap_study.pipeline.kept, through Engine.map's ``keep``): every
stage's result reloads to the same output bytes; a stage stopped midway computes only the runs
it lacks and returns what an uninterrupted one returns; kept runs that changed, or were made
with other settings, are computed again; too little disk space is refused before any run."""

import dataclasses
import errno
import shutil
import uuid

import numpy as np
import pandas as pd
import pytest
from builders import TINY_MODEL

from gap_study.nets.checkpoints import write_checkpoint
from gap_study.pipeline.engine import open_engine
from gap_study.pipeline.io import DiskFullError, write_arrays, write_csv
from gap_study.pipeline.kept import KeptRuns, NotEnoughSpaceError, fingerprint
from gap_study.pipeline.params import ComputeParams, EvaluateParams, TrainParams
from gap_study.pipeline.paths import RunId
from gap_study.stages.evaluate import RunEvaluation, evaluate_task
from gap_study.stages.mechanism import Cell, MechanismResult, MechanismRun, mechanism_task
from gap_study.stages.train import TrainedRun, train_task
from gap_study.stages.tune import TuningRun, tune_task

TRAIN = TrainParams(seeds=[0], epochs=1, batch_size=32, schedule="cosine", drop_last=False,
                    weight_decay=0.0, validation_batch_size=512, fractions=[1.0], shift=[0])
EVALUATE = EvaluateParams(max_shift=2, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def results(small):
    """A result of every kind a stage keeps, from one-epoch runs of a tiny model."""
    data, run = small.without_test(), RunId(1.0, 0, 0)
    trained = train_task(("gap", run), data=data, architecture=TINY_MODEL, settings=TRAIN,
                         learning_rates={"gap": 0.01}, device="cpu")
    grid = {"data": small, "architecture": TINY_MODEL, "settings": TRAIN,
            "learning_rates": {"gap": 0.01}, "test_index": np.arange(30), "max_shift": 2,
            "batch_size": 64, "device": "cpu"}
    return {
        TrainedRun: trained,
        TuningRun: tune_task(("gap", 0.01, 100), data=data, architecture=TINY_MODEL,
                             settings=TRAIN, device="cpu"),
        MechanismResult: mechanism_task(
            (MechanismRun("gap", Cell("blurmax", "circular"), run, main=False), None), **grid),
        "main": mechanism_task(
            (MechanismRun("gap", Cell("max", "zeros"), run, main=True), trained.checkpoint),
            **grid),
        RunEvaluation: evaluate_task((run, trained.checkpoint), data=small, settings=EVALUATE,
                                     device="cpu", full_fraction=1.0, example_run=run),
    }


def _written(result, folder) -> dict[str, bytes | str]:
    """What a stage writes of each field of ``result`` with the project's writers (tables as
    CSV, arrays as .npz, checkpoints), and the exact repr of everything else (rows, records:
    NumPy scalar types included)."""
    out: dict[str, bytes | str] = {}
    for field in dataclasses.fields(result):
        value, path = getattr(result, field.name), folder / field.name
        if isinstance(value, pd.DataFrame):
            write_csv(path, value)
        elif isinstance(value, np.ndarray):
            write_arrays(path, {"array": value})
        elif isinstance(value, dict) and "state_dict" in value:
            write_checkpoint(path, value)
        elif isinstance(value, dict) and value and all(isinstance(v, np.ndarray)
                                                       for v in value.values()):
            write_arrays(path, value)
        else:
            out[field.name] = repr(value)
            continue
        out[field.name] = path.read_bytes()
    return out


@pytest.mark.parametrize("kind", [TrainedRun, TuningRun, MechanismResult, "main",
                                  RunEvaluation])
def test_every_stages_result_reloads_to_the_same_output_bytes(results, kind, tmp_path):
    result = results[kind]
    keep = KeptRuns(tmp_path / "kept", type(result), outputs=tmp_path)
    keep.save("k", result, "a run")
    reloaded = keep.load("k")
    assert keep.notes == [] and type(reloaded) is type(result)
    assert _written(reloaded, tmp_path / "reloaded") == _written(result, tmp_path / "fresh")
    for field in dataclasses.fields(result):  # tables keep their column types too
        if isinstance(value := getattr(result, field.name), pd.DataFrame):
            assert getattr(reloaded, field.name).dtypes.equals(value.dtypes)


@dataclasses.dataclass(frozen=True)
class Run:
    """What the toy task returns: a table and an array, as the stages' results hold."""

    item: int
    table: pd.DataFrame
    values: np.ndarray


def _toy_task(item, *, offset, calls, fault):
    """A run that leaves a file in ``calls`` for every time it computes, and raises while
    ``fault`` exists and ``item`` is 3: KeyboardInterrupt in this process (Ctrl-C), a failed
    run on a worker."""
    (calls / f"{item}-{uuid.uuid4().hex}").touch()
    if item == 3 and fault.exists():
        raise (KeyboardInterrupt if fault.read_text() == "interrupt" else
               RuntimeError("injected fault"))
    rng = np.random.default_rng(item + offset)
    return Run(item, pd.DataFrame({"x": rng.random(3), "name": [f"r{item}"] * 3}),
               rng.integers(0, 9, (2, 2)).astype(np.int8))


def _calls(folder) -> list[int]:
    computed = sorted(int(p.name.split("-")[0]) for p in folder.iterdir())
    shutil.rmtree(folder)
    folder.mkdir()
    return computed


def _map(engine, shared, keep):
    return engine.map(_toy_task, list(range(6)), shared=shared, name="toy", keep=keep,
                      label=lambda item: f"run{item}")


def _same(ours, theirs) -> bool:
    return all(a.item == b.item and a.table.equals(b.table) and np.array_equal(a.values, b.values)
               and a.values.dtype == b.values.dtype for a, b in zip(ours, theirs, strict=True))


@pytest.mark.parametrize(("scheduler", "fault"), [("synchronous", "interrupt"),
                                                  ("local", "failure")])
def test_a_stage_stopped_midway_computes_only_the_runs_it_lacks_and_gives_the_same_results(
        tmp_path, scheduler, fault):
    calls, marker = tmp_path / "calls", tmp_path / "fault"
    calls.mkdir()
    shared = {"offset": 10, "calls": calls, "fault": marker}
    keep = KeptRuns(tmp_path / "kept", Run, outputs=tmp_path)
    compute = ComputeParams(scheduler=scheduler, threads_per_run=1, workers=1)
    with open_engine(compute) as engine:
        clean = _map(engine, shared, None)
        assert _calls(calls) == list(range(6))
        marker.write_text(fault)
        with pytest.raises(KeyboardInterrupt if fault == "interrupt" else RuntimeError):
            _map(engine, shared, keep)
        stopped = _calls(calls)
        marker.unlink()
        resumed = _map(engine, shared, keep)
    # one worker, one run at a time: runs 0-2 finished and were kept, 3 failed; on a worker it
    # was retried once, and run 4, handed out as 3 came back, finished and was kept too
    if fault == "interrupt":
        assert stopped == [0, 1, 2, 3] and _calls(calls) == [3, 4, 5]
    else:
        assert stopped == [0, 1, 2, 3, 3, 4] and _calls(calls) == [3, 5]
    assert _same(resumed, clean)


def test_a_kept_run_that_changed_or_was_made_with_other_settings_is_computed_again(tmp_path,
                                                                                 capsys):
    calls = tmp_path / "calls"
    calls.mkdir()
    shared = {"offset": 10, "calls": calls, "fault": tmp_path / "none"}
    keep = KeptRuns(tmp_path / "kept", Run, outputs=tmp_path)
    with open_engine(ComputeParams(scheduler="synchronous", threads_per_run=1,
                                   workers=None)) as engine:
        first = _map(engine, shared, keep)
        kept = sorted((tmp_path / "kept").glob("*/arrays.npz"))
        data = bytearray(kept[0].read_bytes())
        data[-30] ^= 1  # one flipped bit
        kept[0].write_bytes(bytes(data))
        _calls(calls)
        again = _map(engine, shared, keep)
        assert len(_calls(calls)) == 1  # the changed one alone
        assert "not used, computed again: arrays.npz has changed" in capsys.readouterr().out
        _map(engine, {**shared, "offset": 11}, keep)
        assert _calls(calls) == list(range(6))  # other settings: other runs
    assert _same(again, first)


def test_a_run_is_keyed_by_the_values_it_is_made_of():
    assert len({fingerprint(v) for v in (1, 1.0, True, "1", None, (1,), [1])}) == 7
    assert fingerprint({"a": 1, "b": np.arange(3)}) == fingerprint({"b": np.arange(3), "a": 1})
    assert fingerprint(np.arange(3)) != fingerprint(np.arange(3).astype(np.int32))
    assert fingerprint(RunId(1.0, 0, 0)) != fingerprint(RunId(1.0, 0, 1))


def test_too_little_free_space_is_refused_before_any_run_naming_path_bytes_and_fix(
        tmp_path, monkeypatch):
    calls = tmp_path / "calls"
    calls.mkdir()
    keep = KeptRuns(tmp_path / "kept", Run, outputs=tmp_path)
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(shutil, "disk_usage", lambda _path: usage._replace(free=5_000_000))
    with open_engine(ComputeParams(scheduler="synchronous", threads_per_run=1,
                                   workers=None)) as engine, \
            pytest.raises(NotEnoughSpaceError) as refused:
        engine.map(_toy_task, list(range(6)), shared={"offset": 0, "calls": calls,
                                                       "fault": tmp_path / "none"},
                   name="toy", keep=keep, size=lambda item: 1_000_000)
    # 6 runs kept and 6 outputs, a MB each and 64 KiB more
    assert str(refused.value) == (
        f"[Errno 28] not enough free disk space in {tmp_path}: the stage needs about "
        f"12,786,432 bytes (12.2 MiB) there for 6 runs kept as they finish and the outputs of "
        "6, and 5,000,000 bytes (4.8 MiB) are free. Free space there (`dvc gc -w` drops cached "
        "versions the workspace does not use) or run fewer runs, then run the stage again")
    assert list(calls.iterdir()) == []


def test_a_full_disk_while_keeping_a_run_says_disk_full_naming_the_file(tmp_path, monkeypatch):
    def no_space(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    keep = KeptRuns(tmp_path / "kept", Run, outputs=tmp_path)
    monkeypatch.setattr(np, "savez", no_space)
    with pytest.raises(DiskFullError, match=r"disk full: could not write .*/kept/k/arrays\.npz"):
        keep.save("k", Run(0, pd.DataFrame({"x": [1.0]}), np.zeros(2)), "run0")
    monkeypatch.undo()
    assert keep.load("k") is None  # nothing half-kept is used


def test_runs_kept_with_numba_are_not_reused_without_it(monkeypatch):
    # BlurMaxPool2d rounds differently on torch's ops: a kept run must match the path taken
    from gap_study.pipeline import kept
    kept.code_fingerprint.cache_clear()
    try:
        with_numba = kept.code_fingerprint()
        kept.code_fingerprint.cache_clear()
        monkeypatch.setattr(kept, "numba_version", lambda: None)
        assert kept.code_fingerprint() != with_numba
    finally:
        kept.code_fingerprint.cache_clear()
