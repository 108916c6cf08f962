"""What a model predicts and how well (``docs/study.md``, "Metrics"): accuracy, loss, the
overfitting gap, the shift accuracy grid, consistency and the 1-pixel flip rate. Every function
takes a model and tensors and returns values; nothing is written.

A metric that is a mean over test images also has its per-image values (the ``*_per_image``
functions and ``image_outcomes``), for intervals that resample the test images. Where the mean
of the per-image values gives the very float the run's metric always had, the metric is that
mean; elsewhere (loss, the all-pairs flip rate) the metric keeps its own computation and the
per-image mean agrees with it up to float rounding.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gap_study.data.canvas import random_offsets, shift, shift_each

__all__ = [
    "accuracy_by_radius",
    "all_pairs_flip_rate",
    "all_pairs_flips_per_image",
    "consistency",
    "consistency_per_image",
    "exact_consistency",
    "exact_consistency_per_image",
    "flip_rate",
    "flip_rate_per_image",
    "grid_accuracy",
    "grid_offsets",
    "image_outcomes",
    "loss_and_accuracy",
    "overfitting_metrics",
    "predict_logits",
    "share",
    "shift_accuracy_per_image",
    "shift_grid_predictions",
    "shift_summary",
]


def share(hits: np.ndarray) -> float:
    """The share of ``True`` in a ``bool`` array: the count over the length, as every
    share-of-images metric here has always been computed (``nan`` for no images)."""
    return int(hits.sum()) / len(hits) if len(hits) else float("nan")


@torch.inference_mode()
def predict_logits(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    """Logits ``(N, K)`` for ``(N, C, H, W)`` images, in eval mode, in batches."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def loss_and_accuracy(model: nn.Module, images: Tensor, labels: Tensor,
                      batch_size: int) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``images``."""
    logits = predict_logits(model, images, batch_size)
    loss = F.cross_entropy(logits, labels).item()
    correct = (logits.argmax(dim=1) == labels).sum().item()
    return loss, correct / len(labels)


def image_outcomes(model: nn.Module, images: Tensor, labels: Tensor,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Per image: whether the top-1 class is right (``bool (N,)``) and the cross-entropy
    (``float32 (N,)``); their means are ``loss_and_accuracy``'s accuracy (exactly) and loss
    (up to float32 rounding: torch sums in another order)."""
    logits = predict_logits(model, images, batch_size)
    loss = F.cross_entropy(logits, labels, reduction="none")
    return ((logits.argmax(dim=1) == labels).cpu().numpy(),
            loss.to(torch.float32).cpu().numpy())


def overfitting_metrics(model: nn.Module, x_train: Tensor, y_train: Tensor, x_test: Tensor,
                        y_test: Tensor, batch_size: int) -> dict[str, float]:
    """Train and test accuracy/loss on centred images (eval mode) and the two gaps.

    ``overfit_gap = train_accuracy - test_accuracy``; ``loss_gap = test_loss - train_loss``.
    """
    train_loss, train_accuracy = loss_and_accuracy(model, x_train, y_train, batch_size)
    test_loss, test_accuracy = loss_and_accuracy(model, x_test, y_test, batch_size)
    return {
        "train_accuracy": train_accuracy,
        "test_accuracy": test_accuracy,
        "overfit_gap": train_accuracy - test_accuracy,
        "train_loss": train_loss,
        "test_loss": test_loss,
        "loss_gap": test_loss - train_loss,
    }


def grid_offsets(max_shift: int) -> list[tuple[int, int]]:
    """Every integer ``(dx, dy)`` in ``[-S, S]^2``, row by row (``dy`` outer, ``dx`` inner)."""
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    span = range(-max_shift, max_shift + 1)
    return [(dx, dy) for dy in span for dx in span]


@torch.inference_mode()
def shift_grid_predictions(model: nn.Module, images: Tensor, max_shift: int,
                           batch_size: int) -> np.ndarray:
    """The predicted class of every image moved by every offset of ``grid_offsets``:
    ``int8 (N, M)``, M = (2S+1)^2. Small image sets are evaluated several shifted copies per
    forward pass (``batch_size`` images each)."""
    offsets = grid_offsets(max_shift)
    offsets_per_pass = max(1, batch_size // len(images))
    predicted = []
    for i in range(0, len(offsets), offsets_per_pass):
        chunk = offsets[i:i + offsets_per_pass]
        batch = torch.cat([shift(images, dx, dy) for dx, dy in chunk])
        classes = predict_logits(model, batch, batch_size).argmax(dim=1)
        predicted.append(classes.view(len(chunk), -1))
    return torch.cat(predicted).T.to(torch.int8).cpu().numpy()


def grid_accuracy(predictions: np.ndarray, labels: np.ndarray, max_shift: int) -> pd.DataFrame:
    """One row per offset: ``dx, dy, radius = max(|dx|, |dy|), accuracy``, from
    ``shift_grid_predictions``."""
    grid = pd.DataFrame(grid_offsets(max_shift), columns=["dx", "dy"])
    grid["radius"] = np.maximum(grid.dx.abs(), grid.dy.abs())
    grid["accuracy"] = (predictions == np.asarray(labels)[:, None]).mean(axis=0)
    return grid


def shift_accuracy_per_image(predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each image's accuracy over the whole grid, ``float64 (N,)``: its mean over images is
    ``shift_summary``'s mean accuracy up to float rounding (a mean of means, summed in
    another order)."""
    return (predictions == np.asarray(labels)[:, None]).mean(axis=1)


def exact_consistency_per_image(predictions: np.ndarray) -> np.ndarray:
    """Each image's ``sum_c (n_ic / M)^2``, ``float64 (N,)``: the probability that two offsets
    drawn uniformly (independently) from the grid give image i the same class, with ``n_ic``
    the offsets of M at which image i is predicted class c."""
    n, m = predictions.shape
    counts = np.zeros((n, int(predictions.max()) + 1))
    np.add.at(counts, (np.arange(n)[:, None], predictions.astype(np.int64)), 1)
    return ((counts / m) ** 2).sum(axis=1)


def exact_consistency(predictions: np.ndarray) -> float:
    """The mean over images of ``exact_consistency_per_image``."""
    return float(exact_consistency_per_image(predictions).mean())


def _neighbour_pairs(predictions: np.ndarray, max_shift: int) -> list[tuple[np.ndarray, ...]]:
    """The grid's 1-pixel neighbours (horizontal, vertical and both diagonals) as pairs of
    ``(N, rows, columns)`` views."""
    side = 2 * max_shift + 1
    grid = predictions.reshape(len(predictions), side, side)  # (N, dy, dx)
    return [(grid[:, :, 1:], grid[:, :, :-1]), (grid[:, 1:, :], grid[:, :-1, :]),
            (grid[:, 1:, 1:], grid[:, :-1, :-1]), (grid[:, 1:, :-1], grid[:, :-1, 1:])]


def all_pairs_flip_rate(predictions: np.ndarray, max_shift: int) -> float:
    """The share of 1-pixel neighbours anywhere on the grid (horizontal, vertical and both
    diagonals) whose predicted classes differ, over all images."""
    pairs = _neighbour_pairs(predictions, max_shift)
    differ = sum(int((a != b).sum()) for a, b in pairs)
    total = sum(a.size for a, _ in pairs)
    return differ / total if total else float("nan")


def all_pairs_flips_per_image(predictions: np.ndarray, max_shift: int) -> np.ndarray:
    """Each image's share of differing 1-pixel neighbours on the grid, ``float64 (N,)``; every
    image has as many pairs, so the mean over images is ``all_pairs_flip_rate`` up to float
    rounding. ``nan`` for a grid of one offset."""
    pairs = _neighbour_pairs(predictions, max_shift)
    differ = sum((a != b).reshape(len(a), -1).sum(axis=1) for a, b in pairs)
    per_image = sum(a.shape[1] * a.shape[2] for a, _ in pairs)
    if not per_image:
        return np.full(len(predictions), np.nan)
    return differ / per_image


def accuracy_by_radius(grid: pd.DataFrame) -> pd.DataFrame:
    """Mean accuracy over the offsets at each shift radius ``max(|dx|, |dy|)``.

    Every offset is scored on the same images, so this is also the accuracy over all
    (image, offset) pairs at that radius.
    """
    return grid.groupby("radius", as_index=False)["accuracy"].mean()


def shift_summary(grid: pd.DataFrame) -> dict[str, float]:
    """Mean and worst accuracy over the whole shift grid."""
    return {"shift_accuracy_mean": float(grid.accuracy.mean()),
            "shift_accuracy_worst": float(grid.accuracy.min())}


@torch.inference_mode()
def consistency_per_image(model: nn.Module, images: Tensor, max_shift: int, seed: int,
                          batch_size: int) -> np.ndarray:
    """Whether two independent random shifts of each image (offsets uniform in ``[-S, S]^2``,
    drawn from ``seed``) get the same predicted class, right or wrong: ``bool (N,)``."""
    generator = torch.Generator().manual_seed(seed)
    first = random_offsets(len(images), max_shift, generator)
    second = random_offsets(len(images), max_shift, generator)
    predict = [predict_logits(model, shift_each(images, dx, dy), batch_size).argmax(dim=1)
               for dx, dy in (first, second)]
    return (predict[0] == predict[1]).cpu().numpy()


def consistency(model: nn.Module, images: Tensor, max_shift: int, seed: int,
                batch_size: int) -> float:
    """Zhang (2019): probability that two independent random shifts of the same image get the
    same predicted class, right or wrong: the share of ``consistency_per_image``."""
    return share(consistency_per_image(model, images, max_shift, seed, batch_size))


ONE_PIXEL_MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))


@torch.inference_mode()
def flip_rate_per_image(model: nn.Module, images: Tensor, batch_size: int) -> np.ndarray:
    """The share of the four 1-pixel moves (right, left, down, up) that change each image's
    top-1 class: ``float64 (N,)``, multiples of 1/4."""
    centred = predict_logits(model, images, batch_size).argmax(dim=1)
    flips = sum((predict_logits(model, shift(images, dx, dy), batch_size).argmax(dim=1)
                 != centred).to(torch.int64) for dx, dy in ONE_PIXEL_MOVES)
    return flips.cpu().numpy() / len(ONE_PIXEL_MOVES)


def flip_rate(model: nn.Module, images: Tensor, batch_size: int) -> float:
    """Azulay & Weiss (2019): probability that the top-1 class changes when the object moves by
    one pixel, averaged over the four directions: the mean of ``flip_rate_per_image``.

    The mean is exact: quarters sum without rounding, and one division by N remains, so it is
    the float ``flips / (4 N)`` always gave."""
    return float(flip_rate_per_image(model, images, batch_size).mean())
