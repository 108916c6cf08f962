"""The ``gap-study`` command (also ``python -m gap_study``): a few shortcuts around the DVC
pipeline, each the project's own entry point, not a second copy of it.

    gap-study check              validate params.yaml, as the pipeline's first stage does
    gap-study sweep [OPTIONS]    pool the DVC experiments' results (python -m gap_study.sweep)
    gap-study replicate COMMAND  publish a study to results/, compare studies, README's table
                                 (python -m gap_study.replicate)
    gap-study report [--open]    where the report is; --open shows it in a web browser

The study itself runs with ``dvc repro`` (or ``make repro``); ``gap-study <command> --help``
explains each command.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import webbrowser
from collections.abc import Sequence
from pathlib import Path

from gap_study.pipeline.paths import find_project_root

__all__ = ["build_parser", "main"]

CHECK_HELP = """Validate every section of params.yaml (the project's, or --params-file) and
print each problem with its key, its value and what is allowed, or that the file is valid.
The same check is the pipeline's first stage (python -m gap_study.pipeline.check): run it
after editing params.yaml and before `dvc repro` or `dvc exp run`. Exit status 2 when the
file is not valid. Writes nothing."""

SWEEP_HELP = """Pool the results of the project's finished DVC experiments into
reports/sweep/ (python -m gap_study.sweep): every option after `sweep` is that module's;
`gap-study sweep --help` lists them."""

REPLICATE_HELP = """Publish a finished study's verdicts to results/NAME, set the published
studies side by side claim by claim, or rewrite README.md's results table
(python -m gap_study.replicate): every option after `replicate` is that module's;
`gap-study replicate --help` lists them."""

REPORT_HELP = """Print the paths of the report the pipeline wrote (reports/report.html and
reports/report.md); with --open, show the HTML report (one self-contained file) in the
default web browser. Exit status 1 when the pipeline has not written it yet."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gap-study",
        description="Shortcuts around the gap-study pipeline: check its params, pool its "
                    "experiments, compare published studies, open its report. "
                    "`gap-study COMMAND --help` explains each.",
        epilog="The study itself runs with `dvc repro` (or `make repro`); docs/operations.md "
               "has the rest.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="validate params.yaml", description=CHECK_HELP)
    check.add_argument("--params-file", type=Path, default=None,
                       help="the file to check (default: the project's params.yaml)")
    commands.add_parser("sweep", help="pool the DVC experiments' results into reports/sweep/",
                        description=SWEEP_HELP, add_help=False)
    commands.add_parser("replicate", help="publish, compare and tabulate studies in results/",
                        description=REPLICATE_HELP, add_help=False)
    report = commands.add_parser("report", help="where the report is; --open shows it",
                                 description=REPORT_HELP)
    report.add_argument("--open", action="store_true",
                        help="open reports/report.html in the default web browser")
    return parser


def _check(params_file: Path | None) -> int:
    from gap_study.pipeline import check

    params = params_file if params_file is not None else find_project_root() / "params.yaml"
    with tempfile.TemporaryDirectory() as folder:  # the stage's stamp is DVC's, not ours
        return check.main(["--params-file", str(params), "--stamp", str(Path(folder) / "ok")])


def _sweep(options: Sequence[str]) -> int:
    from gap_study import sweep

    return sweep.main(list(options))


def _replicate(options: Sequence[str]) -> int:
    from gap_study import replicate

    return replicate.main(list(options))


def _report(show: bool) -> int:
    reports = find_project_root() / "reports"
    html, markdown = reports / "report.html", reports / "report.md"
    if not html.is_file():
        print(f"error: no report in {reports} yet: run the pipeline first (`dvc repro`, or "
              "`make repro`)", file=sys.stderr)
        return 1
    print(html)
    if markdown.is_file():
        print(markdown)
    if show and not webbrowser.open(html.as_uri()):
        print(f"error: no web browser could be started here; open {html} by hand",
              file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args, rest = build_parser().parse_known_args(argv)
    if rest and args.command not in ("sweep", "replicate"):
        build_parser().error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "check":
            return _check(args.params_file)
        if args.command == "sweep":
            return _sweep(rest)
        if args.command == "replicate":
            return _replicate(rest)
        return _report(args.open)
    except FileNotFoundError as error:  # not inside the project
        print(f"error: {error}", file=sys.stderr)
        return 2
