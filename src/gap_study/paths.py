"""Where each stage reads and writes, relative to the project root (the folder holding
``dvc.yaml``). ``dvc.yaml`` declares the same paths as the stages' deps and outs."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Layout", "find_project_root"]


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
    """The project's files. Per-head folders hold one file per training seed."""

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

    def checkpoint(self, head: str, seed: int) -> Path:
        return self.models(head) / f"seed_{seed}.pt"

    def checkpoints(self, head: str) -> list[tuple[int, Path]]:
        """``(seed, path)`` of every checkpoint of ``head``, by seed."""
        found = []
        for path in self.models(head).glob("seed_*.pt"):
            match = re.fullmatch(r"seed_(\d+)\.pt", path.name)
            if match:
                found.append((int(match.group(1)), path))
        if not found:
            raise FileNotFoundError(f"no checkpoints in {self.models(head)}: run the training "
                                    f"stage first (`dvc repro train@{head}`)")
        return sorted(found)

    def train_reports(self, head: str) -> Path:
        return self.root / "reports" / "train" / head

    def history(self, head: str, seed: int) -> Path:
        return self.train_reports(head) / "history" / f"seed_{seed}.csv"

    def train_run(self, head: str) -> Path:
        return self.train_reports(head) / "run.json"

    def eval_reports(self, head: str) -> Path:
        return self.root / "reports" / "eval" / head

    def eval_metrics(self, head: str) -> Path:
        return self.eval_reports(head) / "metrics.csv"

    def shift_grid(self, head: str) -> Path:
        return self.eval_reports(head) / "shift_grid.csv"

    def cam_examples(self, head: str) -> Path:
        return self.eval_reports(head) / "cam_examples.npz"

    def eval_run(self, head: str) -> Path:
        return self.eval_reports(head) / "run.json"

    @property
    def reports(self) -> Path:
        return self.root / "reports"

    @property
    def figures(self) -> Path:
        return self.reports / "figures"
