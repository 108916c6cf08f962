"""The study over many DVC experiments: pool every experiment's ``reports/results.csv``.

A sweep queues one experiment per data set (and, to run in parallel, per seed), runs the queue,
then reports over all of them::

    dvc exp run --queue -S data.name=digits -S 'train.seeds=[0]'
    dvc exp run --queue -S data.name=digits -S 'train.seeds=[1]'
    dvc queue start -j 2
    dvc exp show
    python -m gap_study.sweep   # reports/sweep/: sweep.md, results.csv, summary.csv, settings.csv

Runs are pooled only within identical settings: an experiment's settings are its params
except ``IGNORED_PARAMS`` (where that rule is stated, with its reasons) and the canvases of the
other data sets. Runs of experiments with the same settings and the same part (the main runs
or the mechanism experiment's), backbone, head, training fraction and training shift are
pooled across experiments, so seeds trained by different experiments (in parallel) count as
seeds of one study; experiments with other settings (say ``train.epochs``) form their own
group, with their own tables. A run found in two experiments
with the same settings (same part, backbone, head, fraction, shift and seed) is counted once.
A head that no learning rate trained in an experiment (``at_chance`` in its
``reports/tune/choices.csv``) is named above its section's table, and ``results.csv`` marks
its runs (``untrained``, and ``untrained_in``: the experiments that recorded it).
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import dvc.api
import pandas as pd
from dvc.exceptions import PathMissingError

from gap_study.pipeline.io import write_csv, write_text
from gap_study.pipeline.params import ParamsError, load_params
from gap_study.report.formatting import grouped_stat_table
from gap_study.report.stats import summarize
from gap_study.report.tables import RESULT_KEYS
from gap_study.stages.untrained import listed, untrained_heads

__all__ = [
    "IGNORED_PARAMS",
    "SWEEP_METRICS",
    "Sweep",
    "collect_sweep",
    "experiments",
    "label_runs",
    "pool_runs",
    "recorded_untrained",
    "run_settings",
    "settings_differences",
    "settings_frame",
    "settings_id",
    "sweep_summary",
    "sweep_table",
]

SWEEP_METRICS = ("test_accuracy", "test_loss", "overfit_gap", "shift_accuracy_mean",
                 "consistency_exact", "flip_rate_all_pairs", "aligned_shift_accuracy",
                 "other_shift_accuracy", "consistency", "flip_rate", "pointing_accuracy",
                 "pointing_gradcam_two_objects", "seconds_per_epoch")
GROUP_KEYS = ["data", "settings", *RESULT_KEYS[:-1]]  # a run's keys but its seed
# Params (dotted keys; a section name covers all of it) that do not change what a run's result
# means, so experiments differing only in them are pooled: which seeds, heads and mechanism
# cells an experiment trains, the shift-trained one included (a run's numbers depend on its
# own seed, head, cell and training shift alone),
# where the data files are cached and whether they may be downloaded (the files are
# hash-checked), and how the numbers are computed or reported (device, compute and the
# evaluation and validation batch sizes change the speed and at most the last bits of
# floating point, as another CPU does, never a random draw; the speed section times training
# steps, no run; the report section sets the confidence level, which the sweep takes from
# --confidence or params.yaml).
# Everything else, including train.fractions and train.shift, is a setting: the largest
# fraction decides which runs get the translation and CAM metrics, and pooling too little is
# safe where pooling too much is not.
IGNORED_PARAMS = ("train.seeds", "heads", "mechanism.heads", "mechanism.downsample",
                  "mechanism.padding", "mechanism.train_shift", "device", "compute",
                  "data.root", "data.download", "evaluate.batch_size",
                  "train.validation_batch_size", "speed", "report")
UNSET = "(unset)"  # a key an experiment's params do not have, in settings_differences
CHOICES = "reports/tune/choices.csv"  # the tune stage's choices: at_chance marks untrained heads
SETTINGS_FRONT = ["experiment", "rev", "data", "settings"]


class Sweep(NamedTuple):
    """What ``collect_sweep`` reads: the pooled runs and each experiment's settings."""

    runs: pd.DataFrame
    settings: pd.DataFrame


def _flatten(params: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested mappings as one mapping of dotted keys; lists and scalars are leaves."""
    flat: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _canonical(value: Any) -> Any:
    """``value`` with integral floats as ints (``1.0`` and ``1`` are one setting), recursively."""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


def _ignored(key: str) -> bool:
    return any(key == name or key.startswith(f"{name}.") for name in IGNORED_PARAMS)


def run_settings(params: Mapping[str, Any]) -> dict[str, Any]:
    """The params that define what an experiment's runs mean: a new dict of dotted keys
    (``"train.epochs"``), sorted, values canonical (integral floats as ints), without
    ``IGNORED_PARAMS``, and ``data.canvas`` the canvas side of ``data.name`` alone (not the
    mapping of every data set's). ``params`` (as in ``params.yaml``) is not changed."""
    data = params.get("data", {})
    canvas = data.get("canvas")
    if isinstance(canvas, Mapping) and data.get("name") in canvas:
        # the other data sets' canvases are unused by this experiment
        params = {**params, "data": {**data, "canvas": canvas[data["name"]]}}
    settings = {key: _canonical(value) for key, value in _flatten(params).items()
                if not _ignored(key)}
    return dict(sorted(settings.items()))


def settings_id(settings: Mapping[str, Any]) -> str:
    """A short, stable name of ``settings`` (from ``run_settings``): the first 8 hex digits of
    the SHA-256 of their canonical JSON (sorted keys), the same whatever the key order."""
    text = json.dumps(_canonical(dict(settings)), sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def label_runs(results: pd.DataFrame, *, experiment: str, rev: str,
               params: Mapping[str, Any], untrained: Mapping[str, bool] | None = None
               ) -> pd.DataFrame:
    """One experiment's ``results.csv`` frame with ``experiment, rev, data, settings`` (its
    name, revision, ``data.name`` and ``settings_id``) in front and ``untrained`` last: a new
    frame. ``untrained`` is ``recorded_untrained``'s (head -> no rate tried trained it) for the
    row's head, empty where the experiment does not record it (``None``, or a head it lacks).
    A ``results.csv`` from before the ``part`` column holds the main runs alone, on the
    backbone of its ``model`` params: its rows get those keys."""
    if "part" not in results:
        model = params.get("model", {})
        results = results.assign(part="main", downsample=model.get("downsample", "max"),
                                 padding=model.get("padding", "zeros"))
    labels = {"experiment": experiment, "rev": rev, "data": params["data"]["name"],
              "settings": settings_id(run_settings(params))}
    rest = [c for c in results.columns if c not in labels]
    flags = results["head"].map(dict(untrained or {})).astype("boolean")
    return results[rest].assign(**labels, untrained=flags)[[*labels, *rest, "untrained"]]


def recorded_untrained(repo: str | Path, rev: str) -> dict[str, bool] | None:
    """Whether no learning rate tried trained each head of the experiment at ``rev``
    (``at_chance`` in its ``reports/tune/choices.csv``, as its tune stage decided it), or
    ``None`` where it has no such file or column."""
    try:
        text = dvc.api.read(CHOICES, repo=str(repo), rev=rev)
    except PathMissingError:
        return None
    choices = pd.read_csv(io.StringIO(text))
    flagged = untrained_heads(choices, choices["head"]) if "head" in choices else None
    return None if flagged is None else {str(head): head in flagged for head in choices["head"]}


def _merge_untrained(frame: pd.DataFrame) -> pd.DataFrame:
    """``frame`` with each head's ``untrained`` made its settings group's: true where any
    experiment of the group recorded it untrained (``untrained_in``: those experiments),
    false where others recorded it trained, empty where none recorded it."""
    keys = ["data", "settings", "head"]
    at = pd.MultiIndex.from_frame(frame[keys])
    marked = frame[frame["untrained"].fillna(False).astype(bool)]
    names = marked.groupby(keys)["experiment"].agg(lambda s: ", ".join(sorted(set(s))))
    recorded = frame[frame["untrained"].notna()].groupby(keys).size()
    untrained_in = names.reindex(at).fillna("").to_numpy()
    known = recorded.reindex(at).notna().to_numpy()
    flags = pd.array([True if name else (False if seen else pd.NA)
                      for name, seen in zip(untrained_in, known, strict=True)], dtype="boolean")
    return frame.assign(untrained=flags, untrained_in=untrained_in)


def pool_runs(frames: Iterable[pd.DataFrame]) -> pd.DataFrame:
    """The runs of every experiment (frames from ``label_runs``) in one frame, each run once:
    sorted by experiment name (then revision, then the experiment's own row order), a run
    repeated with the same ``data``, ``settings`` and ``RESULT_KEYS`` (part, backbone, head,
    fraction, training shift, seed) kept only from the first experiment that has it; each
    head's ``untrained`` that of its settings group (``_merge_untrained``), whichever
    experiment's run is kept. Raises ``ValueError`` when there are no frames."""
    frame = _merge_untrained(pd.concat(list(frames), ignore_index=True))
    frame = frame.sort_values(["experiment", "rev"], kind="stable", ignore_index=True)
    # Same settings (every param that defines a run's result) and the same part, backbone,
    # head, fraction, shift and seed: the same seeded, deterministic training and evaluation,
    # i.e. one run computed twice (a rerun, or overlapping seed lists), identical but for its
    # timings. Counting it twice would add a fake seed. Keeping the first by experiment name
    # makes the choice (and seconds_per_epoch) independent of the order experiments are
    # listed in.
    return frame.drop_duplicates(["data", "settings", *RESULT_KEYS], ignore_index=True)


def _cell(value: Any) -> str:
    """A settings value as text: strings as they are, everything else as JSON."""
    return value if isinstance(value, str) else json.dumps(value)


def settings_frame(params: Iterable[tuple[str, str, Mapping[str, Any]]]) -> pd.DataFrame:
    """One row per ``(experiment, rev, params)``: ``experiment, rev, data, settings`` (as in
    ``label_runs``), then one column per dotted key of ``run_settings`` (values as text:
    strings as they are, others as JSON; empty where an experiment lacks the key)."""
    rows = []
    for experiment, rev, values in params:
        settings = run_settings(values)
        rows.append({"experiment": experiment, "rev": rev, "data": values["data"]["name"],
                     "settings": settings_id(settings),
                     **{key: _cell(value) for key, value in settings.items()}})
    frame = pd.DataFrame(rows, columns=SETTINGS_FRONT) if not rows else pd.DataFrame(rows)
    keys = sorted(c for c in frame.columns if c not in SETTINGS_FRONT)
    return frame[SETTINGS_FRONT + keys]


def settings_differences(settings: pd.DataFrame) -> pd.DataFrame:
    """One row per settings group of a ``settings_frame``, in order of appearance:
    ``data, settings, experiments`` (their names, sorted, comma-separated), then only the keys
    whose values differ between the groups (``data.name`` aside: it has its own column),
    a missing key shown as ``(unset)``."""
    groups = settings.drop_duplicates("settings").set_index("settings", drop=False)
    keys = [c for c in settings.columns if c not in (*SETTINGS_FRONT, "data.name")]
    values = groups[keys].astype(object).where(groups[keys].notna(), UNSET)
    differ = [k for k in keys if values[k].nunique() > 1]
    names = settings.groupby("settings", sort=False)["experiment"].agg(
        lambda s: ", ".join(sorted(s)))
    out = groups[["data", "settings"]].assign(experiments=names)
    return pd.concat([out, values[differ]], axis=1).reset_index(drop=True)


def experiments(repo: str | Path = ".") -> pd.DataFrame:
    """The finished experiments of ``repo`` (from the Git ``HEAD``): name and revision."""
    rows = dvc.api.exp_show(repo=str(repo))
    found = [{"experiment": row["Experiment"], "rev": row["rev"]} for row in rows
             if row.get("Experiment") and row.get("State") in (None, "Success")]
    return pd.DataFrame(found, columns=["experiment", "rev"])


def collect_sweep(repo: str | Path = ".", revs: pd.DataFrame | None = None) -> Sweep:
    """Every experiment's ``results.csv``, params and untrained heads: ``Sweep(runs,
    settings)``, ``runs`` from ``pool_runs`` (each run once, labelled with experiment,
    revision, data set, settings and ``untrained``) and ``settings`` from
    ``settings_frame``. Raises ``LookupError`` if there are none."""
    revs = experiments(repo) if revs is None else revs
    if revs.empty:
        raise LookupError(f"no finished DVC experiments in {repo}: queue some with "
                          "`dvc exp run --queue -S ...` and run them with `dvc queue start`")
    frames, params = [], []
    for exp in revs.itertuples(index=False):
        values = dvc.api.params_show(repo=str(repo), rev=exp.rev)
        text = dvc.api.read("reports/results.csv", repo=str(repo), rev=exp.rev)
        frames.append(label_runs(pd.read_csv(io.StringIO(text)), experiment=exp.experiment,
                                 rev=exp.rev, params=values,
                                 untrained=recorded_untrained(repo, exp.rev)))
        params.append((exp.experiment, exp.rev, values))
    return Sweep(pool_runs(frames), settings_frame(params))


def sweep_summary(frame: pd.DataFrame, confidence: float = 0.95) -> pd.DataFrame:
    """``summarize`` over seeds per data set, settings and run keys but the seed (``GROUP_KEYS``:
    part, backbone, head, training fraction and training shift): one row per group and metric
    with ``n, mean, std, ci_low, ci_high``."""
    metrics = [m for m in SWEEP_METRICS if m in frame]
    return summarize(frame, GROUP_KEYS, metrics, confidence)


def _settings_line(settings: str, differences: pd.DataFrame | None) -> str:
    """The Markdown line that says which settings a section's runs share."""
    if differences is None or settings not in set(differences["settings"]):
        return f"Settings `{settings}`."
    row = differences[differences["settings"] == settings].iloc[0]
    keys = [c for c in differences.columns if c not in ("data", "settings", "experiments")]
    shown = ", ".join(f"`{key}` = {row[key]}" for key in keys)
    return (f"Settings `{settings}` (experiments {row['experiments']})"
            + (f": {shown}." if shown else "."))


def _experiments(names: Sequence[str]) -> str:
    return f"experiment{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _untrained_lines(runs: pd.DataFrame) -> list[str]:
    """A section's Markdown lines on its untrained heads (``pool_runs``' ``untrained``), and
    on its experiments that do not record them: nothing where every head trained."""
    lines = []
    flagged = runs[runs["untrained"].fillna(False).astype(bool)].drop_duplicates("head")
    if len(flagged):
        one = len(flagged) == 1
        heads = listed([f"`{row.head}` ({_experiments(row.untrained_in.split(', '))})"
                        for row in flagged.itertuples()])
        lines += [f"**Untrained: {heads}.** No learning rate tried trained "
                  f"{'it' if one else 'them'} there (`at_chance` in `{CHOICES}`): "
                  f"{'its' if one else 'their'} rows include runs at chance, which say nothing "
                  "of pooling.", ""]
    unknown = sorted(runs.loc[runs["untrained"].isna(), "experiment"].unique())
    if unknown:
        one = len(unknown) == 1
        lines += [f"{_experiments(unknown).capitalize()} {'does' if one else 'do'} not record "
                  f"which heads trained (no `at_chance` in {'its' if one else 'their'} "
                  f"`{CHOICES}`): run {'it' if one else 'them'} again to know.", ""]
    return lines


def sweep_table(frame: pd.DataFrame, confidence: float = 0.95,
                settings: pd.DataFrame | None = None) -> str:
    """The sweep as Markdown text: one section per data set and settings group (headed
    ``## <data> (<n> seeds)``, with ``, settings <id>`` after the data set where it has more
    than one group), each with one table row per part x backbone x head x fraction x shift.
    With ``settings`` (a ``settings_frame``) each section names the keys whose values differ
    between groups. A section names its untrained heads above its table."""
    summary = sweep_summary(frame, confidence)
    heads = list(dict.fromkeys(frame["head"]))
    metrics = [m for m in SWEEP_METRICS if m in frame]
    differences = None if settings is None else settings_differences(settings)
    # sections: data sets in order of appearance, each data set's settings groups together
    groups = frame[["data", "settings"]].drop_duplicates()
    first = {data: i for i, data in enumerate(dict.fromkeys(groups["data"]))}
    groups = groups.sort_values("data", key=lambda c: c.map(first), kind="stable")
    per_data = groups.groupby("data", sort=False)["settings"].nunique()
    by_group = dict(list(summary.groupby(["data", "settings"], sort=False)))
    lines = ["# Sweep over DVC experiments", "",
             f"{frame['experiment'].nunique()} experiments, {len(groups)} settings, "
             f"{len(frame)} runs. Runs are pooled only within identical settings (every param "
             f"but {', '.join(f'`{p}`' for p in IGNORED_PARAMS)} and other data sets' "
             f"canvases). Mean [{confidence:.0%} Student-t interval] over the seeds of all "
             "experiments with those settings (standard deviations: `summary.csv`).", ""]
    for data, key in groups.itertuples(index=False):
        table = grouped_stat_table(by_group[data, key].drop(columns=["data", "settings"]),
                                   GROUP_KEYS[2:], metrics, metrics, heads)
        runs = frame[(frame["data"] == data) & (frame["settings"] == key)]
        name = data if per_data[data] == 1 else f"{data}, settings {key}"
        seeds = runs["seed"].nunique()
        lines += [f"## {name} ({seeds} seed{'' if seeds == 1 else 's'})", "",
                  _settings_line(key, differences), "", *_untrained_lines(runs),
                  table.to_markdown(index=False), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gap_study.sweep", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=".", help="the DVC project (default: here)")
    parser.add_argument("--out", default="reports/sweep", help="folder for the sweep's files")
    parser.add_argument("--confidence", type=float, default=None,
                        help="the intervals' level (default: report.confidence of the "
                             "project's params.yaml)")
    args = parser.parse_args(argv)
    try:
        confidence = (args.confidence if args.confidence is not None
                      else load_params(Path(args.repo) / "params.yaml").report.confidence)
        sweep = collect_sweep(args.repo)
    except (LookupError, ParamsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    text = sweep_table(sweep.runs, confidence, sweep.settings)
    write_csv(out / "results.csv", sweep.runs)
    write_csv(out / "summary.csv", sweep_summary(sweep.runs, confidence))
    write_csv(out / "settings.csv", sweep.settings)
    write_text(out / "sweep.md", text)
    print(text)
    print(f"wrote {out}/sweep.md, results.csv, summary.csv, settings.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main())
