"""Data sets on a canvas: the object sits in the middle of a larger zero background so it
can move (``shift``) without leaving the image.

The default set is scikit-learn's embedded 8x8 handwritten digits (1,797 images, no
network), upsampled and centred on a ``canvas`` x ``canvas`` image; MNIST, Fashion-MNIST and
CIFAR-10 come from verified files (``gap_study.datasets``).
Images are stored as ``uint8`` ``(N, C, H, W)``; ``to_float`` scales them to ``[0, 1]``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from gap_study.datasets import load_raw, stratified_subsample
from gap_study.io import write_arrays

__all__ = [
    "CanvasDataset",
    "digits_objects",
    "fraction_subset",
    "load_prepared",
    "object_boxes",
    "place_on_canvas",
    "prepare_dataset",
    "save_prepared",
    "shift",
    "shift_margin",
    "to_float",
]

ArrayT = TypeVar("ArrayT", np.ndarray, torch.Tensor)


@dataclass(frozen=True)
class CanvasDataset:
    """A train/test split of images on a canvas.

    ``x_*``: ``uint8 (N, C, H, W)``; ``y_*``: ``int64 (N,)``; ``box_*``: ``int64 (N, 4)``, each
    object's tight bounding box on the canvas as ``(top, left, bottom, right)``, bottom/right
    exclusive.
    """

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    box_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    box_test: np.ndarray
    num_classes: int

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])


def shift(images: ArrayT, dx: int, dy: int) -> ArrayT:
    """Move every image's content by ``dx`` pixels right and ``dy`` down, filling with zeros.

    Works on the last two axes of a NumPy array or a torch tensor, e.g. ``(N, C, H, W)``;
    content moved past the border is lost (not wrapped). Returns a new array.
    """
    h, w = images.shape[-2:]
    out = torch.zeros_like(images) if isinstance(images, torch.Tensor) else np.zeros_like(images)
    if abs(dx) >= w or abs(dy) >= h:
        return out
    out[..., max(dy, 0):h + min(dy, 0), max(dx, 0):w + min(dx, 0)] = \
        images[..., max(-dy, 0):h - max(dy, 0), max(-dx, 0):w - max(dx, 0)]
    return out


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
    mask = images.reshape(images.shape[0], -1, *images.shape[-2:]).any(axis=1)
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


def digits_objects(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 embedded 8x8 digits, bilinearly upsampled to ``size``:
    ``uint8 (N, 1, size, size)`` and ``int64 (N,)`` labels."""
    # imported here: scikit-learn takes ~0.8 s to import, and only the prepare stage needs it
    from sklearn.datasets import load_digits

    digits = load_digits()
    small = torch.from_numpy(digits.images.astype(np.float32) / 16.0)[:, None]  # (N, 1, 8, 8)
    big = F.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)
    return np.rint(big.clamp(0, 1).numpy() * 255).astype(np.uint8), digits.target.astype(np.int64)


def prepare_dataset(name: str, *, canvas: int, digits_size: int = 16, test_fraction: float = 0.25,
                    split_seed: int = 0, root: str | Path = "data/raw", download: bool = True,
                    max_train: int | None = None, max_test: int | None = None) -> CanvasDataset:
    """A data set's train/test split with every object centred on a ``canvas`` square.

    ``digits``: the embedded digits upsampled to ``digits_size``, split (stratified, fixed by
    ``split_seed``, independent of training seeds) with ``test_fraction`` for testing.
    ``mnist``, ``fashion_mnist``, ``cifar10``: the official split, from verified files in
    ``root`` (downloaded there once when ``download``). ``max_train``/``max_test`` keep a
    stratified subsample seeded by ``split_seed``.
    """
    if name == "digits":
        from sklearn.model_selection import train_test_split  # see digits_objects

        objects, labels = digits_objects(digits_size)
        train_idx, test_idx = train_test_split(np.arange(len(labels)), test_size=test_fraction,
                                               stratify=labels, random_state=split_seed)
        train_idx, test_idx = np.sort(train_idx), np.sort(test_idx)
        x_train, y_train = objects[train_idx], labels[train_idx]
        x_test, y_test = objects[test_idx], labels[test_idx]
        num_classes = 10
    else:
        raw = load_raw(name, root, download=download)
        x_train, y_train, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test
        num_classes = raw.num_classes
    x_train, y_train = stratified_subsample(x_train, y_train, max_train, split_seed)
    x_test, y_test = stratified_subsample(x_test, y_test, max_test, split_seed)
    x_train, x_test = place_on_canvas(x_train, canvas), place_on_canvas(x_test, canvas)
    return CanvasDataset(name=name, x_train=x_train, y_train=y_train,
                         box_train=object_boxes(x_train), x_test=x_test, y_test=y_test,
                         box_test=object_boxes(x_test), num_classes=num_classes)


def fraction_subset(labels: np.ndarray, fraction: float) -> np.ndarray:
    """Sorted indices of ``round(fraction * N)`` (at least 1) examples, stratified by class.

    The examples are ranked once, classes interleaved in proportion to their sizes (a fixed
    random order within each class), and a fraction keeps a prefix of that ranking: smaller
    fractions are subsets of larger ones and every head and seed sees the same examples, so a
    learning curve compares heads on identical data.
    """
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(0)
    position = np.empty(len(labels))
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        # the k-th of n members of a class sits at (k + 0.5) / n along the ranking
        position[members] = (np.arange(len(members)) + 0.5) / len(members)
    ranking = np.argsort(position, kind="stable")
    return np.sort(ranking[:max(1, round(fraction * len(labels)))])


def to_float(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """``uint8`` images to a ``float32`` tensor in ``[0, 1]`` (zero background stays zero)."""
    return torch.as_tensor(images).to(torch.float32).div_(255.0)


def save_prepared(path: str | Path, dataset: CanvasDataset) -> None:
    """Write ``dataset`` as an uncompressed ``.npz`` (no pickled objects), atomically."""
    arrays = {f.name: getattr(dataset, f.name) for f in fields(dataset)}
    arrays["name"] = np.array(dataset.name)
    arrays["num_classes"] = np.array(dataset.num_classes)
    write_arrays(path, arrays)


def load_prepared(path: str | Path) -> CanvasDataset:
    """Read a data set written by ``save_prepared``; a missing file says which stage makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: run the 'prepare' stage "
                                "(`dvc repro prepare`) to create it")
    with np.load(path, allow_pickle=False) as npz:
        values = {f.name: npz[f.name] for f in fields(CanvasDataset)}
    values["name"] = str(values["name"])
    values["num_classes"] = int(values["num_classes"])
    return CanvasDataset(**values)
