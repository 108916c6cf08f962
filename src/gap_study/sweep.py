"""The study over many DVC experiments: pool every experiment's ``reports/results.csv``.

A sweep queues one experiment per data set (and, to run in parallel, per seed), runs the queue,
then reports over all of them::

    dvc exp run --queue -S data.name=digits -S 'train.seeds=[0]'
    dvc exp run --queue -S data.name=digits -S 'train.seeds=[1]'
    dvc queue start -j 2
    dvc exp show
    python -m gap_study.sweep          # reports/sweep/: sweep.md, results.csv, summary.csv

Runs with the same data set, head, training fraction and training shift are pooled across
experiments, so seeds trained by different experiments (in parallel) count as seeds of one
study; a run found in two experiments (same data set, head, fraction, shift and seed) is
counted once.
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import dvc.api
import pandas as pd

from gap_study.io import write_csv, write_text
from gap_study.report import RUN_KEYS, grouped_stat_table, summarize

__all__ = ["SWEEP_METRICS", "collect_sweep", "experiments", "sweep_summary", "sweep_table"]

SWEEP_METRICS = ("test_accuracy", "overfit_gap", "shift_accuracy_mean", "consistency",
                 "flip_rate", "pointing_accuracy", "seconds_per_epoch")
GROUP_KEYS = ["data", "head", "fraction", "train_shift"]


def experiments(repo: str | Path = ".") -> pd.DataFrame:
    """The finished experiments of ``repo`` (from the Git ``HEAD``): name and revision."""
    rows = dvc.api.exp_show(repo=str(repo))
    found = [{"experiment": row["Experiment"], "rev": row["rev"]} for row in rows
             if row.get("Experiment") and row.get("State") in (None, "Success")]
    return pd.DataFrame(found, columns=["experiment", "rev"])


def collect_sweep(repo: str | Path = ".", revs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every experiment's ``results.csv`` in one tidy frame, with the experiment's name,
    revision and data set (``data``) in front. Raises ``LookupError`` if there are none."""
    revs = experiments(repo) if revs is None else revs
    if revs.empty:
        raise LookupError(f"no finished DVC experiments in {repo}: queue some with "
                          "`dvc exp run --queue -S ...` and run them with `dvc queue start`")
    frames = []
    for exp in revs.itertuples(index=False):
        params = dvc.api.params_show(repo=str(repo), rev=exp.rev)
        text = dvc.api.read("reports/results.csv", repo=str(repo), rev=exp.rev)
        frames.append(pd.read_csv(io.StringIO(text)).assign(
            experiment=exp.experiment, rev=exp.rev, data=params["data"]["name"]))
    frame = pd.concat(frames, ignore_index=True)
    front = ["experiment", "rev", "data"]
    frame = frame[front + [c for c in frame.columns if c not in front]]
    # the same run in two experiments (e.g. a rerun) is one run, not two seeds
    return frame.drop_duplicates(["data", *RUN_KEYS], ignore_index=True)


def sweep_summary(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """``summarize`` over seeds per data set, head, training fraction and training shift."""
    metrics = [m for m in SWEEP_METRICS if m in frame]
    return summarize(frame, GROUP_KEYS, metrics, confidence)


def sweep_table(frame: pd.DataFrame, confidence: float = 0.95) -> str:
    """The sweep as Markdown: one table per data set, one row per head x fraction x shift."""
    summary = sweep_summary(frame, confidence)
    heads = list(dict.fromkeys(frame["head"]))
    metrics = [m for m in SWEEP_METRICS if m in frame]
    lines = ["# Sweep over DVC experiments", "",
             f"{frame['experiment'].nunique()} experiments, {len(frame)} runs. Mean ± std "
             f"[{confidence:.0%} Student-t interval] over the seeds of all experiments.", ""]
    for data, group in summary.groupby("data", sort=False):
        table = grouped_stat_table(group.drop(columns="data"), GROUP_KEYS[1:], metrics,
                                   metrics, heads)
        seeds = frame.loc[frame["data"] == data, "seed"].nunique()
        lines += [f"## {data} ({seeds} seeds)", "", table.to_markdown(index=False), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gap_study.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".", help="the DVC project (default: here)")
    parser.add_argument("--out", default="reports/sweep", help="folder for the sweep's files")
    parser.add_argument("--confidence", type=float, default=0.95)
    args = parser.parse_args(argv)
    try:
        frame = collect_sweep(args.repo)
    except LookupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    text = sweep_table(frame, args.confidence)
    write_csv(out / "results.csv", frame)
    write_csv(out / "summary.csv", sweep_summary(frame, args.confidence))
    write_text(out / "sweep.md", text)
    print(text)
    print(f"wrote {out}/sweep.md, results.csv, summary.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
