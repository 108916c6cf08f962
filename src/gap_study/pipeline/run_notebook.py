"""Run a pipeline notebook through papermill with its parameters taken from ``params.yaml``.

    python -m gap_study.pipeline.run_notebook notebooks/train.ipynb \\
        reports/notebooks/train_gap.ipynb -p heads '[gap]'

Each parameter of the notebook's ``parameters`` cell that names a top-level key of
``params.yaml`` (``train``, ``model``, ``device`` ...) receives that key's value; ``-p NAME VALUE``
sets the others (``VALUE`` is read as YAML). ``params.yaml`` is validated first, so a bad value
fails at once, before a kernel starts. A failing cell ends the command with exit status 1 and
a few lines naming the error and its root cause (the first exception of a chain, e.g. the
``OSError: [Errno 28]`` under torch's ``unexpected pos``); the executed notebook, failing cell
included, stays at OUTPUT. Ctrl-C ends it with exit status 130 and one line saying how to resume.
The stage's progress bar (``gap_study.pipeline.progress``) is drawn when stdout is a terminal;
in a log it is left out, and the log keeps one line per finished run.
"""

from __future__ import annotations

import argparse
import atexit
import errno
import itertools
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
from pathlib import Path
from typing import Any

from gap_study.pipeline.stops import Stopped, lineage, stops_with_its_starter

# Who started this runner, taken before the slow imports below (about a second): a DVC that
# ends in that time is seen too (gap_study.pipeline.stops).
_STARTED_BY = lineage()

# papermill imports nbformat, which imports jsonschema, which imports rfc3987_syntax when it is
# installed (JupyterLab's dependencies install it) to check "iri" string formats, something
# notebook validation never asks for. Building that module's grammar is slow and would be done
# at every stage's start (docs/operations.md, "Performance"): marking the module absent makes
# jsonschema skip that one format check.
sys.modules.setdefault("rfc3987_syntax", None)

import papermill  # noqa: E402
from jupyter_client.manager import AsyncKernelManager  # noqa: E402
from papermill.exceptions import PapermillExecutionError  # noqa: E402
from pydantic import TypeAdapter, ValidationError  # noqa: E402
from ruamel.yaml import YAMLError  # noqa: E402
from traitlets import CaselessStrEnum  # noqa: E402

from gap_study.pipeline.params import Params, ParamsError, load_params, read_yaml  # noqa: E402
from gap_study.pipeline.params_errors import describe  # noqa: E402

__all__ = ["PROGRESS_ENV", "IpcKernelManager", "check_sections", "main", "notebook_parameters",
           "progress_mode", "root_cause"]

# How the kernel draws its stage's progress bar; gap_study.pipeline.progress reads it (the
# same name, not imported: the runner starts without torch, and its module list is every
# stage's dependency in dvc.yaml).
PROGRESS_ENV = "GAP_STUDY_PROGRESS"

# IPython colours its tracebacks; a chain's parts are separated by one of these lines.
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
class IpcKernelManager(AsyncKernelManager):
    """A kernel that talks to the runner over Unix sockets in Jupyter's runtime folder (owner
    only) rather than TCP on 127.0.0.1: no port any local user can reach, and no "Kernel is
    running over TCP without encryption" warning on every stage."""

    transport = CaselessStrEnum(["tcp", "ipc"], default_value="ipc", config=True)

    def _ip_default(self) -> str:
        # 2. The sockets' path prefix, in a private folder of their own: jupyter_client's
        #    default is the working directory (the project root), where two kernels would clash.
        folder = tempfile.mkdtemp(prefix="gap-study-kernel-")
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        return os.path.join(folder, "kernel")


# 3. POSIX only: Windows has no Unix-socket transport for ZeroMQ.
_KERNEL = ({"kernel_manager_class": IpcKernelManager} if os.name == "posix" else {})
_CPP_TRACE = re.compile(r"Exception raised from |frame #\d+:")
_CHAINED = ("The above exception was the direct cause of the following exception:",
            "During handling of the above exception, another exception occurred:")


def check_sections(sections: dict[str, Any], source: str = "the -p values") -> dict[str, Any]:
    """Validate whole sections given apart from ``params.yaml`` (this runner's ``-p``),
    each against its own model: their values as ``params.yaml``'s would be validated, every
    problem at once. The checks across sections are ``Params``' and are not run here: a
    section replaced for one notebook need not agree with the others."""
    fields, lines = Params.model_fields, []
    for name, value in sections.items():
        if name not in fields:
            continue
        try:
            # the field's type with its constraints (min_length, validators)
            TypeAdapter(fields[name].rebuild_annotation()).validate_python(value, strict=True)
        except ValidationError as exc:
            lines += [describe({**e, "loc": (name, *e["loc"])}, Params) for e in exc.errors()]
    if lines:
        raise ParamsError(f"{source} are not valid:\n  " + "\n  ".join(lines))
    return sections


def notebook_parameters(notebook: str | Path, params_file: str | Path,
                        overrides: dict[str, Any]) -> dict[str, Any]:
    """The values to inject into ``notebook``: its parameters found in ``params_file``
    (validated), then ``overrides``, each validated as the section it replaces
    (``check_sections``). An override the notebook does not declare is an error."""
    declared = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ParamsError(f"{notebook} has no parameter {', '.join(unknown)}; "
                          f"its parameters are: {', '.join(declared)}")
    settings = load_params(params_file).model_dump(mode="json")
    values = {name: settings[name] for name in declared if name in settings}
    values.update(check_sections(overrides))
    return values


def root_cause(traceback: list[str]) -> str | None:
    """The ``Name: message`` line of the first exception of a chained notebook traceback (as
    papermill's ``PapermillExecutionError.traceback`` holds it), or ``None`` for an unchained
    one: what went wrong first, which the outermost error may hide."""
    lines = [_ANSI.sub("", part) for part in traceback]
    ends = [i for i, part in enumerate(lines) if part.strip() in _CHAINED]
    if not ends:
        return None
    first = [part.strip() for part in lines[:ends[0]] if part.strip()]
    return first[-1].splitlines()[0] if first else None


def progress_mode(environ: dict[str, str], stdout: Any) -> str:
    """``text`` when the stage's output reaches a terminal, else ``off``; a value already in
    ``environ`` is kept, so a user can ask for either.

    6. Off unless a person watches: papermill copies the kernel's output to this process's
       own, carriage returns included, so every redraw of a text bar would become a line of a
       log file. tqdm's own test (``disable=None``) cannot tell from inside the kernel, whose
       streams are never terminals.
    """
    return environ.get(PROGRESS_ENV) or ("text" if stdout.isatty() else "off")


def _failure(exc: PapermillExecutionError, notebook: Path, output: Path) -> str:
    """A few lines for a failing cell: the error, its root cause, where the notebook is kept."""
    # 1. The whole message (the project's errors may list several problems), less the C++
    #    backtrace torch appends to some: its "Exception raised from ..." and "frame #N" lines.
    evalue = "\n".join(itertools.takewhile(lambda line: not _CPP_TRACE.match(line),
                                           (exc.evalue or "").splitlines()))
    lines = [f"error: {notebook} failed in cell [{exc.exec_count}] with {exc.ename}: {evalue}"]
    if (cause := root_cause(exc.traceback)) is not None:
        lines.append(f"       caused by {cause}")
    lines.append(f"       the executed notebook, failing cell included, is kept at {output}")
    return "\n".join(lines)


class _UnreadTaskErrors(logging.Filter):
    """Drops asyncio's report of a task whose error nobody read, and nothing else."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Task exception was never retrieved")


_UNREAD_TASK_ERRORS = _UnreadTaskErrors()


def _say(message: str) -> None:
    """``message`` on stderr, if anyone still reads it (a dead starter's pipe may not)."""
    try:
        print(message, file=sys.stderr)
    except OSError:
        pass


def _execute(notebook: Path, output: Path, parameters: dict[str, Any]) -> int:
    """Run the notebook; the exit status, with a short message on a failure or a stop."""
    output.parent.mkdir(parents=True, exist_ok=True)
    os.environ[PROGRESS_ENV] = progress_mode(dict(os.environ), sys.stdout)
    if os.environ[PROGRESS_ENV] == "text":  # the kernel cannot ask the terminal its width
        os.environ.setdefault("COLUMNS", str(shutil.get_terminal_size().columns))
    try:
        with stops_with_its_starter(_STARTED_BY):
            _run_papermill(notebook, output, parameters)
    except PapermillExecutionError as exc:
        print("\n" + _failure(exc, notebook, output), file=sys.stderr)
        return 1
    except OSError as exc:
        # 5. The executed notebook is saved after every cell: a full disk stops it there.
        if exc.errno not in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)):
            raise
        print(f"\nerror: disk full: could not write {output} ({exc.strerror}); free space "
              "and run the stage again", file=sys.stderr)
        return 1
    except KeyboardInterrupt as stop:
        # 2. One line, not papermill's and asyncio's tracebacks: what stopped and how to resume.
        #    nbclient leaves the interrupted cell's task with its error unread, and asyncio
        #    would print that error (the kernel's whole traceback) when the task is collected.
        logging.getLogger("asyncio").addFilter(_UNREAD_TASK_ERRORS)
        how = (f"was stopped ({signal.Signals(stop.signum).name})"
               if isinstance(stop, Stopped) else "stopped")
        _say(f"\ninterrupted: {notebook} {how} before it finished; the stages that finished "
             "are kept: run `dvc repro` again to resume from this one")
        return 128 + (stop.signum if isinstance(stop, Stopped) else signal.SIGINT)
    return 0


def _run_papermill(notebook: Path, output: Path, parameters: dict[str, Any]) -> None:
    """papermill's run of the notebook, as every stage takes it."""
    papermill.execute_notebook(
        str(notebook), str(output), parameters=parameters,
        progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
        # 7. The executed notebook keeps each cell's output streams merged, carriage
        #    returns applied: a progress bar's last state, not every redraw.
        coalesce_streams=True,
        # 4. The kernel's own log (its machinery, not the notebook's output) only for a
        #    crash: a Ctrl-C mid-cell made it print the traceback of a reply to a closed
        #    socket. The notebook's errors and output come through papermill as before.
        extra_arguments=["--IPKernelApp.log_level=CRITICAL"], **_KERNEL,
    )


def _value(name: str, text: str) -> Any:
    """A ``-p`` value, read as YAML as ``params.yaml`` is."""
    try:
        return read_yaml(text)
    except YAMLError as exc:
        raise ParamsError(f"-p {name} {text!r} is not valid YAML: "
                          f"{getattr(exc, 'problem', None) or exc}") from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gap_study.pipeline.run_notebook",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("notebook", type=Path, help="source notebook")
    parser.add_argument("output", type=Path, help="where to write the executed notebook")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[],
                        metavar=("NAME", "VALUE"), help="set a notebook parameter (YAML value)")
    parser.add_argument("--params-file", type=Path, default=Path("params.yaml"))
    args = parser.parse_args(argv)

    if not args.notebook.is_file():
        print(f"error: notebook {args.notebook} not found", file=sys.stderr)
        return 2
    try:
        overrides = {name: _value(name, text) for name, text in args.parameter}
        parameters = notebook_parameters(args.notebook, args.params_file, overrides)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    return _execute(args.notebook, args.output, parameters)


if __name__ == "__main__":
    sys.exit(main())
