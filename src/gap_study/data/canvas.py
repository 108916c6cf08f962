"""Data sets on a canvas: the object sits in the middle of a larger zero background so it
can move (``shift``, ``shift_each``) without leaving the image (``docs/study.md``, "Data").

``gap_study.data.prepare`` puts a data set's objects on the canvas; the prepare stage saves the
result (``save_prepared``) and the later stages read it (``load_prepared``).
Images are stored as ``uint8`` ``(N, C, H, W)``; ``to_float`` scales them to ``[0, 1]``.
torch is imported by the functions on tensors alone: the prepare stage, NumPy throughout, runs
without it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import numpy as np

from gap_study.pipeline.io import write_arrays

if TYPE_CHECKING:
    import torch

__all__ = [
    "CanvasDataset",
    "PreparedDataError",
    "load_prepared",
    "object_boxes",
    "place_on_canvas",
    "random_offsets",
    "save_prepared",
    "shift",
    "shift_each",
    "shift_margin",
    "to_float",
]

ArrayT = TypeVar("ArrayT", np.ndarray, "torch.Tensor")


@dataclass(frozen=True)
class CanvasDataset:
    """A train/validation/test split of images on a canvas. The validation split is carved
    from the training data; anything the study selects or tunes is chosen on it, never on the
    test split.

    ``x_*``: ``uint8 (N, C, H, W)``; ``y_*``: ``int64 (N,)``; ``box_*``: ``int64 (N, 4)``, each
    object's tight bounding box on the canvas as ``(top, left, bottom, right)``, bottom/right
    exclusive.

    ``x_pair``: ``uint8 (M, C, H, W)`` two-object canvases made of test objects
    (``gap_study.data.two_objects``), with ``y_pair``: ``int64 (M, 2)`` their two classes and
    ``box_pair``: ``int64 (M, 2, 4)`` their two boxes, in the same order.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    box_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    box_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    box_test: np.ndarray
    x_pair: np.ndarray
    y_pair: np.ndarray
    box_pair: np.ndarray
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    def summary(self) -> dict[str, object]:
        """Name, sizes and shape, for run records."""
        return {"name": self.name, "train_images": len(self.y_train),
                "validation_images": len(self.y_val), "test_images": len(self.y_test),
                "two_object_canvases": len(self.y_pair), "image_size": self.image_size,
                "in_channels": self.in_channels, "num_classes": self.num_classes}

    def without_test(self) -> CanvasDataset:
        """This data set with an empty test split and no two-object canvases (they are made of
        test objects): what the stages that train or choose get, so that nothing they do can
        depend on a test image."""
        return replace(self, x_test=self.x_test[:0], y_test=self.y_test[:0],
                       box_test=self.box_test[:0], x_pair=self.x_pair[:0],
                       y_pair=self.y_pair[:0], box_pair=self.box_pair[:0])


def shift(images: ArrayT, dx: int, dy: int) -> ArrayT:
    """Move every image's content by ``dx`` pixels right and ``dy`` down, filling with zeros.

    Works on the last two axes of a NumPy array or a torch tensor, e.g. ``(N, C, H, W)``;
    content moved past the border is lost (not wrapped). Returns a new array.
    """
    h, w = images.shape[-2:]
    if isinstance(images, np.ndarray):
        out = np.zeros_like(images)
    else:
        import torch

        out = torch.zeros_like(images)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


def shift_each(images: torch.Tensor, dx: torch.Tensor, dy: torch.Tensor) -> torch.Tensor:
    """Move image ``i`` by its own ``(dx[i], dy[i])`` (right, down), zero fill; ``(N, C, H, W)``.

    Same result as ``shift`` applied image by image, done in one gather.
    """
    import torch
    import torch.nn.functional as F

    n, c, h, w = images.shape
    pad = int(max(dx.abs().max(), dy.abs().max(), 0))
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = torch.arange(h, device=images.device) + pad - dy.to(images.device)[:, None]  # (N, H)
    cols = torch.arange(w, device=images.device) + pad - dx.to(images.device)[:, None]  # (N, W)
    index = torch.arange(n, device=images.device)[:, None, None, None]
    return padded[index, torch.arange(c, device=images.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def random_offsets(count: int, max_shift: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` offsets ``(dx, dy)``, each uniform on the integers of ``[-S, S]``."""
    import torch

    drawn = torch.randint(-max_shift, max_shift + 1, (2, count), generator=generator)
    return drawn[0], drawn[1]


def place_on_canvas(objects: np.ndarray, canvas: int) -> np.ndarray:
    """Centre ``(N, C, h, w)`` objects on a zero ``(N, C, canvas, canvas)`` background."""
    n, c, h, w = objects.shape
    if canvas < max(h, w):
        raise ValueError(f"canvas {canvas} is smaller than the {h}x{w} object")
    top, left = (canvas - h) // 2, (canvas - w) // 2
    out = np.zeros((n, c, canvas, canvas), dtype=objects.dtype)
    out[:, :, top:top + h, left:left + w] = objects
    return out


def object_boxes(images: np.ndarray) -> np.ndarray:
    """Tight ``(top, left, bottom, right)`` box of each ``(N, C, H, W)`` image's non-zero pixels.

    An all-zero image gets the empty box ``(0, 0, 0, 0)``.
    """
    channels = int(np.prod(images.shape[1:-2]))  # explicit: -1 is ambiguous for N == 0
    mask = images.reshape(images.shape[0], channels, *images.shape[-2:]).any(axis=1)
    rows, cols = mask.any(axis=2), mask.any(axis=1)
    boxes = np.zeros((images.shape[0], 4), dtype=np.int64)
    has = rows.any(axis=1)
    boxes[has, 0] = rows[has].argmax(axis=1)
    boxes[has, 1] = cols[has].argmax(axis=1)
    boxes[has, 2] = rows.shape[1] - rows[has, ::-1].argmax(axis=1)
    boxes[has, 3] = cols.shape[1] - cols[has, ::-1].argmax(axis=1)
    return boxes


def shift_margin(boxes: np.ndarray, canvas: int) -> int:
    """Largest ``s`` such that every object moved by any ``|dx|, |dy| <= s`` stays whole."""
    top, left, bottom, right = boxes.T
    return int(min(top.min(), left.min(), (canvas - bottom).min(), (canvas - right).min()))


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8`` images to a ``float32`` tensor in ``[0, 1]`` (zero background stays zero)."""
    import torch

    return torch.as_tensor(images).to(torch.float32).div_(255.0)


def save_prepared(path: str | Path, dataset: CanvasDataset) -> None:
    """Write ``dataset`` as an uncompressed ``.npz`` (no pickled objects), atomically."""
    arrays = {f.name: getattr(dataset, f.name) for f in fields(dataset)}
    arrays["name"] = np.array(dataset.name)
    arrays["num_classes"] = np.array(dataset.num_classes)
    write_arrays(path, arrays)


class PreparedDataError(ValueError):
    """``dataset.npz`` is damaged, not a prepared data set, or from an older prepare stage; the
    message names the file and the fix."""


# What np.load raises on a damaged file: garbage reads as a pickle it refuses (its message
# suggests allow_pickle=True, the unsafe fix), a truncated archive as BadZipFile or EOFError.
_DAMAGED = (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile)
_PREPARE_FIX = ("restore it with `dvc checkout --force data/prepared/dataset.npz`, or make it "
                "again with `dvc repro -f -s prepare`")


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every ``CanvasDataset`` field of the ``.npz`` at ``path``."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [f.name for f in fields(CanvasDataset) if f.name not in npz.files]
            if missing:
                raise PreparedDataError(
                    f"{path} has no {', '.join(missing)}: an older prepare stage wrote it; run "
                    "the 'prepare' stage again (`dvc repro prepare`)")
            return {f.name: npz[f.name] for f in fields(CanvasDataset)}
    except PreparedDataError:
        raise
    except _DAMAGED as error:
        # 1. Never numpy's own message: for garbage it advises allow_pickle=True.
        cause = type(error).__name__
        raise PreparedDataError(f"{path} is damaged or not a prepared data set ({cause}: "
                                f"truncated, overwritten or not an .npz); {_PREPARE_FIX}"
                                ) from None


def load_prepared(path: str | Path) -> CanvasDataset:
    """Read a data set written by ``save_prepared``; a missing file says which stage makes it,
    a damaged one (``PreparedDataError``) names the file and how to restore it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the 'prepare' stage "
                                "(`dvc repro prepare`) to create it")
    arrays = _read_arrays(path)
    for split in ("train", "val", "test", "pair"):
        sizes = {key: len(arrays[key]) for key in (f"x_{split}", f"y_{split}", f"box_{split}")}
        if len(set(sizes.values())) > 1:
            raise PreparedDataError(f"{path} holds {sizes} for its {split} split, which must "
                                    f"agree: it was not written whole; {_PREPARE_FIX}")
    values: dict[str, object] = dict(arrays)
    values["name"] = str(values["name"])
    values["num_classes"] = int(values["num_classes"])  # type: ignore[call-overload]
    return CanvasDataset(**values)  # type: ignore[arg-type]
