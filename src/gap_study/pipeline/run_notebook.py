"""Run a pipeline notebook through papermill with its parameters taken from ``params.yaml``.

    python -m gap_study.pipeline.run_notebook notebooks/train.ipynb \\
        reports/notebooks/train_gap.ipynb -p head gap

Each parameter of the notebook's ``parameters`` cell that names a top-level key of
``params.yaml`` (``train``, ``model``, ``device`` ...) receives that key's value; ``-p NAME VALUE``
sets the others (``VALUE`` is read as YAML). ``params.yaml`` is validated first, so a bad value
fails at once, before a kernel starts. A failing cell ends the command with exit status 1 and
a one-paragraph summary; the executed notebook, failing cell included, stays at OUTPUT.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

# papermill imports nbformat, which imports jsonschema, which imports rfc3987_syntax when it is
# installed (JupyterLab's dependencies install it) to check "iri" string formats, something
# notebook validation never asks for. Building that module's grammar is slow and would be done
# at every stage's start (docs/operations.md, "Performance"): marking the module absent makes
# jsonschema skip that one format check.
sys.modules.setdefault("rfc3987_syntax", None)

import papermill  # noqa: E402
import yaml  # noqa: E402
from papermill.exceptions import PapermillExecutionError  # noqa: E402

from gap_study.pipeline.params import ParamsError, load_params  # noqa: E402

__all__ = ["main", "notebook_parameters"]


def notebook_parameters(notebook: str | Path, params_file: str | Path,
                        overrides: dict[str, Any]) -> dict[str, Any]:
    """The values to inject into ``notebook``: its parameters found in ``params_file``
    (validated), then ``overrides``. An override the notebook does not declare is an error."""
    declared = papermill.inspect_notebook(str(notebook))
    unknown = sorted(set(overrides) - set(declared))
    if unknown:
        raise ParamsError(f"{notebook} has no parameter {', '.join(unknown)}; "
                          f"its parameters are: {', '.join(declared)}")
    settings = load_params(params_file).model_dump(mode="json")
    values = {name: settings[name] for name in declared if name in settings}
    values.update(overrides)
    return values


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
    overrides = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        parameters = notebook_parameters(args.notebook, args.params_file, overrides)
    except ParamsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    args.output.parent.mkdir(parents=True, exist_ok=True)
    try:
        papermill.execute_notebook(
            str(args.notebook), str(args.output), parameters=parameters,
            progress_bar=False, stdout_file=sys.stdout, stderr_file=sys.stderr,
        )
    except PapermillExecutionError as exc:
        print(f"\nerror: {args.notebook} failed in cell [{exc.exec_count}] with "
              f"{exc.ename}: {exc.evalue}\n"
              f"       the executed notebook, failing cell included, is kept at {args.output}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
