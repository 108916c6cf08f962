"""A stage's progress bar (gap_study.pipeline.progress, drawn by Engine.map): runs done,
running and failed with elapsed and estimated time, a log line per finished run beside it;
a text bar on the runner's terminal, none in a log, a widget in JupyterLab."""

import dataclasses
import re
import shutil

import nbformat
import pytest
from nbclient import NotebookClient

from gap_study.pipeline import progress, run_notebook
from gap_study.pipeline.engine import open_engine
from gap_study.pipeline.kept import KeptRuns
from gap_study.pipeline.params import ComputeParams
from gap_study.pipeline.progress import PROGRESS_ENV
from gap_study.pipeline.run_notebook import main, progress_mode

SYNCHRONOUS = ComputeParams(scheduler="synchronous", threads_per_run=1, workers=None)
LINES = ["toy: 2 of 6 runs reused, kept by an attempt that did not finish ({kept}); "
         "computing 4",
         "toy: run2 done (3/6)",
         "toy: 1 run(s) failed, the first run3: RuntimeError: run 3 failed; the finished runs "
         "are kept"]


@dataclasses.dataclass(frozen=True)
class Done:
    item: int


def _task(item, *, fault):
    """Ctrl-C at run 2 or a failure at run 3, as ``fault`` says."""
    if fault.exists() and item == {"interrupt": 2, "failure": 3}[fault.read_text()]:
        if item == 2:
            raise KeyboardInterrupt
        raise RuntimeError("run 3 failed")
    return Done(item)


def _stage_stopped_twice(tmp_path, capsys) -> str:
    """Six runs: the first attempt interrupted at run 2 (runs 0 and 1 kept), the second
    failing at run 3 after computing run 2. The second attempt's output."""
    fault, shared = tmp_path / "fault", {"fault": tmp_path / "fault"}
    keep = KeptRuns(tmp_path / "kept", Done, outputs=tmp_path)
    for attempt, error in (("interrupt", KeyboardInterrupt), ("failure", RuntimeError)):
        fault.write_text(attempt)
        capsys.readouterr()
        with open_engine(SYNCHRONOUS) as engine, pytest.raises(error):
            engine.map(_task, list(range(6)), shared=shared, name="toy", keep=keep,
                       label=lambda item: f"run{item}")
    return capsys.readouterr().out


def test_the_bar_counts_runs_done_running_and_failed_beside_a_log_line_per_run(
        tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "text")
    out = _stage_stopped_twice(tmp_path, capsys)
    frames = [frame for line in out.split("\n") for frame in line.split("\r") if frame.strip()]
    lines = [line.format(kept=tmp_path / "kept") for line in LINES]
    assert [frame for frame in frames if frame.startswith("toy: ")
            and "runs done" not in frame] == lines
    bars = [frame.strip() for frame in frames if "runs done" in frame]
    # reused runs are done from the start, and no part of the rate: no estimate yet
    assert re.fullmatch(r"toy:  33%\|.*\| 2/6 runs done, 0 running, 0 failed \[00:0\d<\?\]",
                        bars[0])
    states = [bar.split("| ")[-1].split(" [")[0] for bar in bars]
    steps = iter(dict.fromkeys(states))  # each state in the order first shown
    assert [state for state in ("2/6 runs done, 1 running, 0 failed",
                                "3/6 runs done, 0 running, 0 failed",
                                "3/6 runs done, 1 running, 0 failed",
                                "3/6 runs done, 0 running, 1 failed") if state in steps] == [
        "2/6 runs done, 1 running, 0 failed", "3/6 runs done, 0 running, 0 failed",
        "3/6 runs done, 1 running, 0 failed", "3/6 runs done, 0 running, 1 failed"]
    assert re.fullmatch(r"toy:  50%\|.*\| 3/6 runs done, 0 running, 1 failed "
                        r"\[\d\d:\d\d<\d\d:\d\d\]", bars[-1])


def test_without_a_terminal_the_log_has_its_lines_and_no_bar(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "off")
    out = _stage_stopped_twice(tmp_path, capsys)
    assert "\r" not in out
    assert out.splitlines() == [line.format(kept=tmp_path / "kept") for line in LINES]


class _Stream:
    def __init__(self, tty: bool):
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_the_runner_asks_for_a_bar_only_on_a_terminal_unless_told():
    assert progress_mode({}, _Stream(True)) == "text"
    assert progress_mode({}, _Stream(False)) == "off"
    assert progress_mode({PROGRESS_ENV: "text"}, _Stream(False)) == "text"
    assert progress_mode({PROGRESS_ENV: "off"}, _Stream(True)) == "off"
    assert run_notebook.PROGRESS_ENV == progress.PROGRESS_ENV  # one name on both sides


def _mapping_notebook(root, path):
    """A notebook that maps three runs on a synchronous engine, as a stage does."""
    nb = nbformat.v4.new_notebook(metadata=nbformat.read(
        root / "notebooks" / "train.ipynb", as_version=4).metadata)
    parameters = nbformat.v4.new_code_cell("device = None")
    parameters.metadata["tags"] = ["parameters"]
    nb.cells = [parameters, nbformat.v4.new_code_cell(
        "from gap_study.pipeline.engine import open_engine\n"
        "from gap_study.pipeline.params import ComputeParams\n\n"
        "compute = ComputeParams(scheduler='synchronous', threads_per_run=1, workers=None)\n"
        "with open_engine(compute) as engine:\n"
        "    engine.map(abs, [-1, -2, -3], shared={}, name='toy')")]
    nbformat.write(nb, path)
    return path


def _streams(nb) -> str:
    return "".join(output.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                   for output in cell.outputs if output.output_type == "stream")


@pytest.mark.slow
def test_on_a_terminal_the_bar_streams_through_the_runner_and_the_notebook_keeps_its_end(
        root, tmp_path, capfd, monkeypatch):
    monkeypatch.setenv(PROGRESS_ENV, "text")  # as the runner sets it on a terminal
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    output = tmp_path / "executed.ipynb"
    assert main([str(_mapping_notebook(root, tmp_path / "toy.ipynb")), str(output),
                 "--params-file", str(tmp_path / "params.yaml")]) == 0
    shown = capfd.readouterr().out
    assert "\r" in shown and "3/3 runs done, 0 running, 0 failed" in shown
    kept = _streams(nbformat.read(output, as_version=4))
    assert "\r" not in kept  # carriage returns applied: the bar's last state alone
    assert [line for line in kept.splitlines() if "runs done" not in line] == [
        "toy: -1 done (1/3)", "toy: -2 done (2/3)", "toy: -3 done (3/3)"]
    assert "3/3 runs done, 0 running, 0 failed" in kept
    assert "Warning" not in shown + kept


@pytest.mark.slow
def test_in_jupyterlab_the_bar_is_a_widget_and_no_tqdm_warning_is_shown(root, tmp_path,
                                                                        monkeypatch):
    monkeypatch.delenv(PROGRESS_ENV, raising=False)  # no runner
    nb = nbformat.read(_mapping_notebook(root, tmp_path / "toy.ipynb"), as_version=4)
    NotebookClient(nb, timeout=120, kernel_name="python3",
                   kernel_manager_class=run_notebook.IpcKernelManager,
                   resources={"metadata": {"path": str(root)}}).execute()
    widgets = [output for cell in nb.cells if cell.cell_type == "code"
               for output in cell.outputs
               if "application/vnd.jupyter.widget-view+json" in output.get("data", {})]
    assert len(widgets) == 1
    text = _streams(nb)
    assert "TqdmWarning" not in text and "IProgress" not in text
    assert text.splitlines() == ["toy: -1 done (1/3)", "toy: -2 done (2/3)", "toy: -3 done (3/3)"]
