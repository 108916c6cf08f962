"""The explorer notebook's logic (``notebooks/explore.ipynb``, not a pipeline stage): one trained
model at a time, on one test image moved by ``(dx, dy)``.

``Explorer.open`` reads what the pipeline wrote (the prepared data set, the run records, the
shift grids) and says plainly what is missing when the pipeline has not run. ``Explorer.view``
loads the chosen run's checkpoint, verified against the SHA-256 its stage recorded, moves the
image (``gap_study.data.canvas.shift``), and returns the prediction, the class maps of the true
and the predicted class (CAM for heads that have one, Grad-CAM otherwise:
``gap_study.measures.localization``) and the run's shift-grid accuracy. ``view_figure`` draws
a view; ``explorer_controls`` wraps both in ipywidgets.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from gap_study.pipeline.paths import Layout, RunId

if TYPE_CHECKING:
    import matplotlib.pyplot as plt

    from gap_study.data.canvas import CanvasDataset
    from gap_study.nets.models import ClassifierNet

__all__ = [
    "Explorer",
    "PipelineNotRunError",
    "Selection",
    "View",
    "explorer_controls",
    "view_figure",
]


class PipelineNotRunError(FileNotFoundError):
    """The pipeline's outputs the explorer reads are not there; the message names them and how
    to make them. In a notebook it shows as its message alone, without a traceback."""

    def _render_traceback_(self) -> list[str]:  # IPython's hook for a custom error display
        return [f"{type(self).__name__}: {self}"]


@dataclass(frozen=True)
class Selection:
    """What to look at: a head, a seed, a mechanism cell (``downsample-padding``), a test image
    (its index in the test split) and the offset it is moved by (pixels, right and down)."""

    head: str
    seed: int
    cell: str
    image: int
    dx: int = 0
    dy: int = 0


@dataclass(frozen=True)
class View:
    """One model's answer on one moved test image. ``image``: ``(H, W)`` or ``(H, W, 3)`` in
    ``[0, 1]``; ``maps``: the class maps ``(H, W)`` of the true and the predicted class;
    ``grid``: the run's test accuracy per offset (``dx, dy, accuracy``); ``box``: the moved
    object's box ``(top, left, bottom, right)``."""

    selection: Selection
    image: np.ndarray
    box: np.ndarray
    label: str
    predicted: str
    probability: float  # of the predicted class
    true_probability: float
    map_name: str  # "CAM" or "Grad-CAM"
    maps: dict[str, np.ndarray]
    grid: pd.DataFrame
    max_shift: int


def _missing_message(root: Path, missing: Sequence[Path]) -> str:
    names = ", ".join(path.relative_to(root).as_posix() for path in missing)
    return (f"the pipeline has not run in {root}: {names} missing. Run `dvc repro` (or "
            "`make repro`) there, or `dvc pull` to fetch a shared run's outputs, then run this "
            "notebook again")


def _class_names(dataset: str, count: int) -> list[str]:
    from gap_study.data.sources import DATASETS

    spec = DATASETS.get(dataset)
    names = list(spec.class_names) if spec is not None else []
    return names if len(names) == count else [str(k) for k in range(count)]


@dataclass
class Explorer:
    """The pipeline's outputs, opened once (``Explorer.open``); models load on first use."""

    layout: Layout
    heads: list[str]
    seeds: list[int]
    main_cell: str
    cells: dict[str, list[str]]  # per head, its cells: the main runs' first
    main_run: RunId  # the fraction and shift of the runs it shows (the main runs)
    max_shift: int
    data: CanvasDataset
    class_names: list[str]
    _grids: dict[str, pd.DataFrame] = field(default_factory=dict, repr=False)
    _models: dict[tuple[str, int, str], ClassifierNet] = field(default_factory=dict, repr=False)

    @classmethod
    def open(cls, heads: Sequence[str] | None = None,
             start: str | Path | None = None) -> Explorer:
        """The outputs of the project at or above ``start`` (default: the working directory),
        for ``heads`` (default: every head the train stage trained) in that order.
        ``PipelineNotRunError`` when the outputs are not there."""
        from gap_study.data.canvas import load_prepared
        from gap_study.pipeline.params import TrainParams

        layout = Layout.find(start)
        needed = [layout.prepared, layout.train_run, layout.eval_run]
        if missing := [path for path in needed if not path.is_file()]:
            raise PipelineNotRunError(_missing_message(layout.root, missing))
        train = json.loads(layout.train_run.read_text())
        evaluate = json.loads(layout.eval_run.read_text())
        chosen = list(train["heads"] if heads is None else heads)
        missing = [layout.shift_grid(h) for h in chosen if not layout.shift_grid(h).is_file()]
        if missing:
            raise PipelineNotRunError(_missing_message(layout.root, missing))
        settings = TrainParams.model_validate(train["train"])
        main_cell = f"{train['model']['downsample']}-{train['model']['padding']}"
        cells = {head: [main_cell] for head in chosen}
        if layout.mechanism_run.is_file() and layout.mechanism_grid.is_file():
            factors = json.loads(layout.mechanism_run.read_text())["mechanism"]
            for head in set(factors["heads"]) & set(chosen):
                cells[head] += [f"{d}-{p}" for d in factors["downsample"]
                                for p in factors["padding"] if f"{d}-{p}" != main_cell]
        data = load_prepared(layout.prepared)
        return cls(layout=layout, heads=chosen, seeds=list(settings.seeds), main_cell=main_cell,
                   cells=cells, main_run=RunId(settings.full_fraction, settings.base_shift, 0),
                   max_shift=int(evaluate["evaluate"]["max_shift"]), data=data,
                   class_names=_class_names(data.name, data.num_classes))

    def run(self, seed: int) -> RunId:
        return RunId(self.main_run.fraction, self.main_run.train_shift, seed)

    def model(self, head: str, seed: int, cell: str) -> ClassifierNet:
        """The run's model on the CPU, its checkpoint verified against its stage's record."""
        from gap_study.nets.checkpoints import model_from_payload, read_checkpoint

        key = (head, seed, cell)
        if key not in self._models:
            if cell not in self.cells[head]:
                raise ValueError(f"{head} has no runs in cell {cell}; its cells: "
                                 f"{', '.join(self.cells[head])}")
            if cell == self.main_cell:
                path = self.layout.checkpoint(head, self.run(seed))
                record = self.layout.train_run
            else:
                path = self.layout.mechanism_checkpoint(cell, head, self.run(seed))
                record = self.layout.mechanism_run
            self._models[key] = model_from_payload(read_checkpoint(path, record), "cpu")
        return self._models[key]

    def grid(self, head: str, seed: int, cell: str) -> pd.DataFrame:
        """The run's test accuracy per offset, ``dx, dy, accuracy``: the evaluate stage's grid
        (every test image) for the main runs, the mechanism stage's (its subsample of test
        images) for the other cells."""
        if cell == self.main_cell:
            name = head
            if name not in self._grids:
                self._grids[name] = pd.read_csv(self.layout.shift_grid(head))
            frame = self._grids[name]
            run = self.run(seed)
            rows = frame[(frame.fraction == run.fraction) & (frame.train_shift == run.train_shift)
                         & (frame.seed == seed)]
        else:
            if "mechanism" not in self._grids:
                self._grids["mechanism"] = pd.read_csv(self.layout.mechanism_grid)
            frame = self._grids["mechanism"]
            downsample, padding = cell.split("-", 1)
            rows = frame[(frame["head"] == head) & (frame.downsample == downsample)
                         & (frame.padding == padding) & (frame.seed == seed)]
        return rows[["dx", "dy", "accuracy"]].reset_index(drop=True)

    def view(self, selection: Selection) -> View:
        """The chosen run's prediction and class maps on the chosen test image, moved."""
        import torch

        from gap_study.data.canvas import shift, to_float
        from gap_study.measures.localization import class_activation_maps, grad_cam
        from gap_study.measures.metrics import predict_logits
        from gap_study.nets.architecture import has_class_map

        s = selection
        if not 0 <= s.image < len(self.data.y_test):
            raise ValueError(f"image {s.image} is not in the test split "
                             f"(0 to {len(self.data.y_test) - 1})")
        model = self.model(s.head, s.seed, s.cell)
        images = shift(to_float(self.data.x_test[s.image:s.image + 1]), s.dx, s.dy)
        with torch.no_grad():
            # one image, and its two maps below: each in one forward pass
            probabilities = torch.softmax(predict_logits(model, images, 1), dim=1)[0]
        label, predicted = int(self.data.y_test[s.image]), int(probabilities.argmax())
        classes = torch.tensor([label, predicted])
        mapper = class_activation_maps if has_class_map(s.head) else grad_cam
        maps = mapper(model, images.expand(2, -1, -1, -1), classes, 2).numpy()
        picture = images[0].numpy()
        return View(
            selection=s,
            image=picture[0] if len(picture) == 1 else picture.transpose(1, 2, 0),
            box=self.data.box_test[s.image] + np.array([s.dy, s.dx, s.dy, s.dx]),
            label=self.class_names[label], predicted=self.class_names[predicted],
            probability=float(probabilities[predicted]),
            true_probability=float(probabilities[label]),
            map_name="CAM" if has_class_map(s.head) else "Grad-CAM",
            maps={"true": maps[0], "predicted": maps[1]},
            grid=self.grid(s.head, s.seed, s.cell), max_shift=self.max_shift)


def view_figure(view: View) -> plt.Figure:
    """The moved image, the class maps of the true and the predicted class over it (white:
    the object's box, red +: the map's maximum), and the run's shift-grid accuracy with the
    current offset framed in red."""
    import matplotlib.pyplot as plt

    from gap_study.report.figures import _cam_panel, _heatmap_panel

    s = view.selection
    fig, axes = plt.subplots(1, 4, figsize=(13, 3.6), layout="constrained")
    axes[0].imshow(view.image, cmap="gray" if view.image.ndim == 2 else None, vmin=0, vmax=1)
    axes[0].set(xticks=[], yticks=[],
                title=f"test image {s.image}, class {view.label}\nmoved ({s.dx:+d}, {s.dy:+d})")
    picture = view.image[None] if view.image.ndim == 2 else view.image.transpose(2, 0, 1)
    for ax, which, name in [(axes[1], "true", view.label), (axes[2], "predicted",
                                                             view.predicted)]:
        _cam_panel(ax, picture, view.maps[which], view.box)
        ax.set_title(f"{view.map_name} of the {which} class {name}")
    odds = [f"p({view.predicted}) = {view.probability:.3f}"]
    if view.predicted != view.label:
        odds.append(f"p({view.label}) = {view.true_probability:.3f}")
    axes[2].set_xlabel(", ".join(odds))
    here = view.grid[(view.grid.dx == s.dx) & (view.grid.dy == s.dy)]["accuracy"]
    at = f"; here {100 * here.iloc[0]:.0f}%" if len(here) else ""
    _heatmap_panel(axes[3], view.grid, f"{s.head}, seed {s.seed}, {s.cell}:\n"
                                       f"test accuracy per offset (%){at}")
    low = -view.max_shift
    if low <= s.dx <= view.max_shift and low <= s.dy <= view.max_shift:
        axes[3].add_patch(plt.Rectangle((s.dx - low, s.dy - low), 1, 1, fill=False,
                                        edgecolor="red", linewidth=2))
    verdict = "right" if view.predicted == view.label else "wrong"
    fig.suptitle(f"{s.head} predicts {view.predicted} (p = {view.probability:.3f}): {verdict}")
    return fig


def explorer_controls(explorer: Explorer, image: int = 0) -> Any:
    """ipywidgets controls (head, seed, cell, test image, dx, dy) above the view they choose,
    redrawn on every change: an ``ipywidgets.VBox``."""
    import ipywidgets as widgets
    import matplotlib.pyplot as plt
    from IPython.display import display

    head = widgets.Dropdown(options=explorer.heads, description="head")
    seed = widgets.Dropdown(options=explorer.seeds, description="seed")
    cell = widgets.Dropdown(options=explorer.cells[explorer.heads[0]], description="cell")
    last = len(explorer.data.y_test) - 1
    picked = widgets.BoundedIntText(value=min(image, last), min=0, max=last,
                                    description="test image")
    shifts = [widgets.IntSlider(value=0, min=-explorer.max_shift, max=explorer.max_shift,
                                description=name, continuous_update=False)
              for name in ("dx", "dy")]

    def follow_head(change: dict[str, Any]) -> None:
        cell.options = explorer.cells[change["new"]]

    head.observe(follow_head, names="value")

    def draw(head: str, seed: int, cell: str, image: int, dx: int, dy: int) -> None:
        figure = view_figure(explorer.view(Selection(head, seed, cell, image, dx, dy)))
        display(figure)
        plt.close(figure)

    output = widgets.interactive_output(draw, {"head": head, "seed": seed, "cell": cell,
                                               "image": picked, "dx": shifts[0],
                                               "dy": shifts[1]})
    return widgets.VBox([widgets.HBox([head, seed, cell]), widgets.HBox([picked, *shifts]),
                         output])
