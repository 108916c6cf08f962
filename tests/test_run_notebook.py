import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import nbformat
import pytest
import yaml
from builders import sigint_as_on_a_terminal
from papermill.exceptions import PapermillExecutionError

from gap_study.pipeline import run_notebook
from gap_study.pipeline.params import ParamsError
from gap_study.pipeline.run_notebook import main, notebook_parameters, root_cause

# What papermill's PapermillExecutionError.traceback holds for a chained error: IPython's
# coloured parts, the first exception's last line before the separator.
CHAINED = [
    "\x1b[31m------------------------------------------------------\x1b[39m",
    "\x1b[31mOSError\x1b[39m                         Traceback (most recent call last)",
    "\x1b[36mCell\x1b[39m \x1b[32mIn[5]\x1b[39m, line 3\n----> 3 write_checkpoint(...)",
    "\x1b[31mOSError\x1b[39m: [Errno 28] No space left on device",
    "\nThe above exception was the direct cause of the following exception:\n",
    "\x1b[31mRuntimeError\x1b[39m                    Traceback (most recent call last)",
    "\x1b[31mRuntimeError\x1b[39m: [enforce fail at inline_container.cc:672] . unexpected pos "
    "99072 vs 98968\nException raised from write_record at inline_container.cc:672\n"
    "frame #0: c10::ThrowEnforceNotMet",
]


def test_notebook_receives_the_params_sections_it_declares(root):
    values = notebook_parameters(root / "notebooks" / "train.ipynb", root / "params.yaml",
                                 {"heads": ["gmp"]})
    params = yaml.safe_load((root / "params.yaml").read_text())
    assert values == {"heads": ["gmp"], "train": params["train"], "model": params["model"],
                      "device": params["device"], "compute": params["compute"]}


def test_an_override_the_notebook_does_not_declare_is_refused(root):
    with pytest.raises(ParamsError, match="has no parameter hed; its parameters are: heads"):
        notebook_parameters(root / "notebooks" / "train.ipynb", root / "params.yaml",
                            {"hed": "gap"})


def test_a_value_that_is_not_yaml_is_refused_naming_it(root, tmp_path, capsys):
    assert main([str(root / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb"),
                 "-p", "heads", "[gap"]) == 2
    assert capsys.readouterr().err.startswith(
        "error: -p heads '[gap' is not valid YAML: expected ',' or ']'")


def test_an_override_is_validated_as_the_section_it_replaces_every_problem_at_once(root):
    with pytest.raises(ParamsError, match=r"the -p values are not valid:\n  heads\[0\] = "
                       r"'gapp': not allowed \(did you mean 'gap'\?\).*\n  train\.epochs = -1:"):
        train = {**yaml.safe_load((root / "params.yaml").read_text())["train"], "epochs": -1}
        notebook_parameters(root / "notebooks" / "train.ipynb", root / "params.yaml",
                            {"heads": ["gapp"], "train": train})


def test_an_override_keeps_the_constraints_of_its_section_not_only_its_type(root):
    for override, expected in (({"heads": []}, r"heads = \[\]: List should have at least 1"),
                               ({"heads": ["gap", "gap"]}, r"heads .*repeated: \['gap'\]"),
                               ({"device": "gpu"}, r"device = 'gpu': must be 'auto', 'cpu'")):
        with pytest.raises(ParamsError, match=expected):
            notebook_parameters(root / "notebooks" / "train.ipynb", root / "params.yaml",
                                override)


def test_invalid_params_stop_the_run_before_a_kernel_starts(root, tmp_path, capsys):
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["epochs"] = -3
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    output = tmp_path / "out.ipynb"
    code = main([str(root / "notebooks" / "train.ipynb"), str(output),
                 "--params-file", str(tmp_path / "params.yaml")])
    assert code == 2
    assert "train.epochs = -3" in capsys.readouterr().err
    assert not output.exists()


def test_a_missing_notebook_is_named(tmp_path, capsys):
    assert main([str(tmp_path / "nope.ipynb"), str(tmp_path / "out.ipynb")]) == 2
    assert "nope.ipynb not found" in capsys.readouterr().err


@pytest.mark.slow
def test_a_failing_cell_fails_the_run_and_keeps_the_executed_notebook(root, tmp_path, capfd):
    shutil.copy(root / "params.yaml", tmp_path / "params.yaml")
    nb = nbformat.v4.new_notebook(metadata=nbformat.read(
        root / "notebooks" / "train.ipynb", as_version=4).metadata)
    params_cell = nbformat.v4.new_code_cell('device = "cpu"')
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell("x = 1"),
                nbformat.v4.new_code_cell("try:\n    {}['disk']\nexcept KeyError as e:\n"
                                          "    raise RuntimeError('the data is bad: ' + device) "
                                          "from e")]
    nbformat.write(nb, tmp_path / "broken.ipynb")
    output = tmp_path / "executed" / "broken.ipynb"
    code = main([str(tmp_path / "broken.ipynb"), str(output),
                 "--params-file", str(tmp_path / "params.yaml")])
    assert code == 1
    err = capfd.readouterr().err  # the kernel's own stderr included
    assert "failed in cell" in err and "RuntimeError: the data is bad: auto" in err
    assert "caused by KeyError: 'disk'" in err
    assert "without encryption" not in err  # the kernel talks over Unix sockets, not TCP
    executed = nbformat.read(output, as_version=4)
    errors = [o for c in executed.cells for o in c.get("outputs", []) if o.output_type == "error"]
    assert errors and errors[0].ename == "RuntimeError"


def test_the_stage_runner_validates_params_without_importing_torch_or_iri_grammars():
    # Every stage starts this runner before its kernel: what it imports is paid once per
    # stage (torch and jsonschema's IRI grammar took 4 s of each stage's 18 s here).
    probe = ("import sys, gap_study.pipeline.run_notebook; "
             "print(sorted(m for m in ('torch', 'rfc3987_syntax', 'lark') "
             "if sys.modules.get(m) is not None))")
    shown = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                           check=True).stdout
    assert shown.strip() == "[]"


def test_the_root_cause_of_a_chained_error_is_its_first_exception():
    assert root_cause(CHAINED) == "OSError: [Errno 28] No space left on device"
    assert root_cause(CHAINED[-2:]) is None  # unchained: the error is its own cause


def _fail_with(error):
    def execute(*_args, **_kwargs):
        raise error

    return execute


def test_a_failing_cell_prints_its_error_and_root_cause_without_torchs_backtrace(
        root, tmp_path, capsys, monkeypatch):
    evalue = CHAINED[-1].split("\x1b[39m: ", 1)[1]  # as papermill has it: with the backtrace
    error = PapermillExecutionError(4, 5, "write_checkpoint(...)", "RuntimeError", evalue,
                                    CHAINED)
    monkeypatch.setattr(run_notebook.papermill, "execute_notebook", _fail_with(error))
    assert main([str(root / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: {root / 'notebooks' / 'train.ipynb'} failed in cell [5] with RuntimeError: "
        "[enforce fail at inline_container.cc:672] . unexpected pos 99072 vs 98968",
        "       caused by OSError: [Errno 28] No space left on device",
        f"       the executed notebook, failing cell included, is kept at {tmp_path / 'out.ipynb'}"]


def test_a_failing_cells_message_is_kept_whole(root, tmp_path, capsys, monkeypatch):
    # a project error may span lines: every problem of params.yaml, a file's expected hash
    error = PapermillExecutionError(1, 2, "prepare()", "DatasetError",
                                    "data/raw/mnist has no train-images\n  expected md5:8d4f", [])
    monkeypatch.setattr(run_notebook.papermill, "execute_notebook", _fail_with(error))
    assert main([str(root / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb")]) == 1
    err = capsys.readouterr().err
    assert "DatasetError: data/raw/mnist has no train-images\n  expected md5:8d4f\n" in err
    assert "caused by" not in err


def test_ctrl_c_prints_one_line_saying_how_to_resume(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_notebook.papermill, "execute_notebook",
                        _fail_with(KeyboardInterrupt()))
    assert main([str(root / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb")]) == 130
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("interrupted: ")
    assert "run `dvc repro` again to resume" in lines[0]


def test_a_full_disk_saving_the_executed_notebook_says_disk_full_with_the_path(
        root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(run_notebook.papermill, "execute_notebook",
                        _fail_with(OSError(errno.ENOSPC, "No space left on device")))
    assert main([str(root / "notebooks" / "train.ipynb"), str(tmp_path / "out.ipynb")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: disk full: could not write {tmp_path / 'out.ipynb'} (No space left on device); "
        "free space and run the stage again")


def _slow_notebook(root: Path, folder: Path) -> None:
    """``folder/slow.ipynb``: prints its kernel's pid, then sleeps a minute; params.yaml beside."""
    shutil.copy(root / "params.yaml", folder / "params.yaml")
    nb = nbformat.v4.new_notebook(metadata=nbformat.read(
        root / "notebooks" / "train.ipynb", as_version=4).metadata)
    params_cell = nbformat.v4.new_code_cell("seconds = 60")
    params_cell.metadata["tags"] = ["parameters"]
    nb.cells = [params_cell, nbformat.v4.new_code_cell(
        "import os, time\nprint('kernel', os.getpid(), flush=True)\ntime.sleep(seconds)")]
    nbformat.write(nb, folder / "slow.ipynb")


def _gone(pid: int, seconds: float = 15) -> bool:
    """Whether process ``pid`` has ended within ``seconds``."""
    for _ in range(int(seconds * 10)):
        if not os.path.exists(f"/proc/{pid}"):
            return True
        time.sleep(0.1)
    return not os.path.exists(f"/proc/{pid}")


RUNNER = [sys.executable, "-m", "gap_study.pipeline.run_notebook", "slow.ipynb", "out.ipynb"]


@pytest.mark.slow
def test_sigterm_mid_cell_stops_the_kernel_and_prints_one_line(root, tmp_path):
    # `kill` of the runner alone, not of its group: the kernel, in a session of its own,
    # must not go on running the stage
    _slow_notebook(root, tmp_path)
    runner = subprocess.Popen(RUNNER, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    kernel = int(runner.stdout.readline().split()[1])
    runner.terminate()
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines() == [
        "interrupted: slow.ipynb was stopped (SIGTERM) before it finished; the stages that "
        "finished are kept: run `dvc repro` again to resume from this one"], err
    assert _gone(kernel)


@pytest.mark.slow
@pytest.mark.parametrize("shell", [[], ["/bin/sh", "-c"]], ids=["direct", "through-sh"])
def test_the_runner_stops_its_kernel_when_the_dvc_that_started_it_dies(root, tmp_path, shell):
    # as when DVC alone is killed. DVC runs a stage through $SHELL or /bin/sh -c, and a shell
    # that does not exec the runner (dash) stays alive between them: DVC's end must be seen
    # through it. DVC_STAGE marks a stage DVC runs, as DVC sets it.
    _slow_notebook(root, tmp_path)
    command = [*shell, " ".join(RUNNER)] if shell else RUNNER
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"runner = subprocess.Popen({command!r})\n"
         "print('started', runner.pid, flush=True)\ntime.sleep(120)"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={**os.environ, "DVC_STAGE": "slow"})
    started = int(starter.stdout.readline().split()[1])  # the runner, or the shell above it
    kernel = int(starter.stdout.readline().split()[1])  # the runner's stdout is the starter's
    starter.kill()
    starter.wait()
    assert _gone(kernel) and _gone(started)


@pytest.mark.slow
def test_a_runner_not_started_by_dvc_outlives_its_starter(root, tmp_path):
    # run by hand and left in the background (`nohup ... &`): it finishes its notebook
    _slow_notebook(root, tmp_path)
    starter = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys, time\n"
         f"runner = subprocess.Popen({[*RUNNER, '-p', 'seconds', '3']!r})\n"
         "print('started', runner.pid, flush=True)\ntime.sleep(120)"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        env={k: v for k, v in os.environ.items() if k != "DVC_STAGE"})
    runner = int(starter.stdout.readline().split()[1])
    starter.stdout.readline()  # the kernel has started its cell
    starter.kill()
    starter.wait()
    assert _gone(runner, seconds=30)
    executed = nbformat.read(tmp_path / "out.ipynb", as_version=4)
    assert [cell.metadata.papermill["status"] for cell in executed.cells] == ["completed"] * len(
        executed.cells)  # it ran to the end and saved the notebook


@pytest.mark.slow
def test_ctrl_c_mid_cell_stops_the_kernel_and_prints_one_line(root, tmp_path):
    _slow_notebook(root, tmp_path)
    # its own process group, as a terminal's Ctrl-C signals the foreground group, and SIGINT
    # as a terminal has it (a runner that ignores SIGINT rightly runs the cell to its end)
    runner = subprocess.Popen(RUNNER, cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=sigint_as_on_a_terminal)
    kernel = int(runner.stdout.readline().split()[1])
    os.killpg(runner.pid, signal.SIGINT)
    _, err = runner.communicate(timeout=60)
    assert runner.returncode == 130, err
    assert err.strip().splitlines() == [
        "interrupted: slow.ipynb stopped before it finished; the stages that finished are kept: "
        "run `dvc repro` again to resume from this one"], err
    assert _gone(kernel, seconds=5)  # not left running the cell
