"""Where each stage reads and writes, relative to the project root (the folder holding
``dvc.yaml``). ``dvc.yaml`` declares the same paths as the stages' deps and outs."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout", "RunId", "find_project_root"]


@dataclass(frozen=True, order=True)
class RunId:
    """One training run of a head: the share of the training set it saw, the largest random
    shift it was trained with (pixels, 0 = always centred) and its seed."""

    fraction: float
    train_shift: int
    seed: int

    @property
    def stem(self) -> str:
        """The run's file name without suffix, e.g. ``fraction_0.3-shift_0-seed_1``."""
        return f"fraction_{self.fraction:g}-shift_{self.train_shift}-seed_{self.seed}"

    @classmethod
    def from_stem(cls, stem: str) -> RunId | None:
        """The run a file name stands for, or ``None`` for another file."""
        match = re.fullmatch(r"fraction_([0-9.e-]+)-shift_(\d+)-seed_(\d+)", stem)
        if match is None:
            return None
        return cls(float(match.group(1)), int(match.group(2)), int(match.group(3)))

    def as_dict(self) -> dict[str, float | int]:
        return {"fraction": self.fraction, "train_shift": self.train_shift, "seed": self.seed}


def find_project_root(start: str | Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding
    ``dvc.yaml`` and ``params.yaml``, so notebooks work whether run by dvc from the root or
    opened from ``notebooks/`` in JupyterLab."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no dvc.yaml and params.yaml at or above {here}: "
                            "run from inside the gap-study project")


@dataclass(frozen=True)
class Layout:
    """The project's files. Per-head folders hold one file per training run (``RunId``); each
    stage's run record (``run.json``) is one file for all heads."""

    root: Path

    @classmethod
    def find(cls, start: str | Path | None = None) -> Layout:
        return cls(find_project_root(start))

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def prepared(self) -> Path:
        return self.root / "data" / "prepared" / "dataset.npz"

    def models(self, head: str) -> Path:
        return self.root / "models" / head

    def checkpoint(self, head: str, run: RunId) -> Path:
        return self.models(head) / f"{run.stem}.pt"

    def checkpoints(self, head: str) -> list[tuple[RunId, Path]]:
        """``(run, path)`` of every checkpoint of ``head`` that the train stage's run record
        lists or that lies in its folder, ordered by fraction, shift, seed.

        1. Both: a recorded checkpoint that is missing, and a file the record does not list,
           are refused when read (``gap_study.nets.checkpoints.read_checkpoint``), not
           skipped; a folder alone would let a lost run drop out of the study unseen.
        """
        try:
            recorded = json.loads(self.train_run.read_text()).get("checkpoints", {})
        except FileNotFoundError:
            recorded = {}
        paths = {self.root / key for key in recorded
                 if Path(key).parent == self.models(head).relative_to(self.root)}
        paths |= set(self.models(head).glob("*.pt"))
        found = [(run, path) for path in paths
                 if (run := RunId.from_stem(path.stem)) is not None]
        if not found:
            raise FileNotFoundError(f"no checkpoints in {self.models(head)}: "
                                    + self._why_untrained(head, recorded))
        return sorted(found)

    def _why_untrained(self, head: str, recorded: dict[str, str]) -> str:
        """The cause and the fix when ``head`` has no checkpoints, from the train stage's
        record (``recorded``: its checkpoints): a study that trained other heads needs
        ``head`` in ``heads`` (a ``-p heads`` of one notebook cannot add one)."""
        models = self.models(head).parent.relative_to(self.root)
        trained = sorted({Path(key).parent.name for key in recorded
                          if Path(key).parent.parent == models})
        if not trained:
            return "run the training stage first (`dvc repro train`)"
        record = self.train_run.relative_to(self.root)
        return (f"the train stage trained {', '.join(trained)} ({record}), not {head}: add "
                f"{head} to `heads` in params.yaml and run `dvc repro train`")

    @property
    def train_reports(self) -> Path:
        return self.root / "reports" / "train"

    def histories(self, head: str) -> Path:
        return self.train_reports / "history" / head

    def history(self, head: str, run: RunId) -> Path:
        return self.histories(head) / f"{run.stem}.csv"

    @property
    def train_run(self) -> Path:
        return self.train_reports / "run.json"

    def eval_reports(self, head: str) -> Path:
        return self.root / "reports" / "eval" / head

    def eval_metrics(self, head: str) -> Path:
        return self.eval_reports(head) / "metrics.csv"

    def shift_grid(self, head: str) -> Path:
        return self.eval_reports(head) / "shift_grid.csv"

    def grid_predictions(self, head: str) -> Path:
        return self.eval_reports(head) / "grid_predictions.npz"

    def per_image(self, head: str) -> Path:
        """Each run's per-image values by ``<run stem>/<metric>``, the mean of each the metric
        of that name in ``metrics.csv`` (``gap_study.stages.evaluate.per_image_values``)."""
        return self.eval_reports(head) / "per_image.npz"

    def cam_examples(self, head: str) -> Path:
        return self.eval_reports(head) / "cam_examples.npz"

    @property
    def eval_run(self) -> Path:
        return self.root / "reports" / "eval" / "run.json"

    @property
    def mechanism_reports(self) -> Path:
        """The mechanism experiment (``gap_study.stages.mechanism``): one file per kind for all
        runs."""
        return self.root / "reports" / "mechanism"

    @property
    def mechanism_runs(self) -> Path:
        """One row per head, cell and seed: the run's metrics on the shift grid."""
        return self.mechanism_reports / "runs.csv"

    @property
    def mechanism_grid(self) -> Path:
        return self.mechanism_reports / "shift_grid.csv"

    @property
    def mechanism_predictions(self) -> Path:
        """Each run's grid predictions, ``int8 (images, offsets)``, by ``head-cell-seed_s``."""
        return self.mechanism_reports / "grid_predictions.npz"

    @property
    def mechanism_history(self) -> Path:
        return self.mechanism_reports / "history.csv"

    @property
    def mechanism_run(self) -> Path:
        return self.mechanism_reports / "run.json"

    def mechanism_checkpoint(self, cell: str, head: str, run: RunId) -> Path:
        """A run the mechanism stage trained (the ``model`` section's cell has none here: it is
        the train stage's)."""
        return self.root / "models_mechanism" / cell / head / f"{run.stem}.pt"

    @property
    def tune_reports(self) -> Path:
        return self.root / "reports" / "tune"

    @property
    def learning_rates(self) -> Path:
        """``{head: learning rate}`` chosen by the tune stage."""
        return self.tune_reports / "learning_rates.json"

    @property
    def tuning(self) -> Path:
        """One row per head and rate: the means over the tuning seeds, and the choice."""
        return self.tune_reports / "tuning.csv"

    @property
    def tuning_runs(self) -> Path:
        """One row per head, rate and tuning seed: that run's final validation loss."""
        return self.tune_reports / "tuning_runs.csv"

    @property
    def tune_choices(self) -> Path:
        """One row per head: the chosen rate, whether it is fragile or at a bound."""
        return self.tune_reports / "choices.csv"

    @property
    def tune_history(self) -> Path:
        return self.tune_reports / "history.csv"

    @property
    def tune_run(self) -> Path:
        return self.tune_reports / "run.json"

    @property
    def speed_reports(self) -> Path:
        return self.root / "reports" / "speed"

    @property
    def step_times(self) -> Path:
        return self.speed_reports / "step_times.csv"

    @property
    def speed_run(self) -> Path:
        return self.speed_reports / "run.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    def kept_runs(self, stage: str) -> Path:
        """Where ``stage`` keeps each run as it finishes, until the stage has written its
        outputs (``gap_study.pipeline.kept``): ignored by git, no DVC output."""
        return self.root / ".gap_study" / "runs" / stage

    @property
    def figures(self) -> Path:
        return self.reports / "figures"
