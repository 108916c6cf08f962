"""What a model predicts and how well (``docs/study.md``, "Metrics"): accuracy, loss, the
overfitting gap, the shift accuracy grid, consistency and the 1-pixel flip rate. Every function
takes a model and tensors and returns values; nothing is written.
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
    "consistency",
    "exact_consistency",
    "flip_rate",
    "grid_accuracy",
    "grid_offsets",
    "loss_and_accuracy",
    "overfitting_metrics",
    "predict_logits",
    "shift_grid_predictions",
    "shift_summary",
]


@torch.inference_mode()
def predict_logits(model: nn.Module, images: Tensor, batch_size: int = 512) -> Tensor:
    """Logits ``(N, K)`` for ``(N, C, H, W)`` images, in eval mode, in batches."""
    model.eval()
    return torch.cat([model(images[i:i + batch_size]) for i in range(0, len(images), batch_size)])


def loss_and_accuracy(model: nn.Module, images: Tensor, labels: Tensor,
                      batch_size: int = 512) -> tuple[float, float]:
    """Mean cross-entropy and top-1 accuracy of ``model`` on ``images``."""
    logits = predict_logits(model, images, batch_size)
    loss = F.cross_entropy(logits, labels).item()
    correct = (logits.argmax(dim=1) == labels).sum().item()
    return loss, correct / len(labels)


def overfitting_metrics(model: nn.Module, x_train: Tensor, y_train: Tensor, x_test: Tensor,
                        y_test: Tensor, batch_size: int = 512) -> dict[str, float]:
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
                           batch_size: int = 512) -> np.ndarray:
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


def exact_consistency(predictions: np.ndarray) -> float:
    """The probability that two offsets drawn uniformly (independently) from the whole grid
    give an image the same class, averaged over images: ``mean_i sum_c (n_ic / M)^2``, with
    ``n_ic`` the offsets of M at which image i is predicted class c."""
    n, m = predictions.shape
    counts = np.zeros((n, int(predictions.max()) + 1))
    np.add.at(counts, (np.arange(n)[:, None], predictions.astype(np.int64)), 1)
    return float(((counts / m) ** 2).sum(axis=1).mean())


def all_pairs_flip_rate(predictions: np.ndarray, max_shift: int) -> float:
    """The share of 1-pixel neighbours anywhere on the grid (horizontal, vertical and both
    diagonals) whose predicted classes differ, over all images."""
    side = 2 * max_shift + 1
    grid = predictions.reshape(len(predictions), side, side)  # (N, dy, dx)
    pairs = [(grid[:, :, 1:], grid[:, :, :-1]), (grid[:, 1:, :], grid[:, :-1, :]),
             (grid[:, 1:, 1:], grid[:, :-1, :-1]), (grid[:, 1:, :-1], grid[:, :-1, 1:])]
    differ = sum(int((a != b).sum()) for a, b in pairs)
    total = sum(a.size for a, _ in pairs)
    return differ / total if total else float("nan")


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
def consistency(model: nn.Module, images: Tensor, max_shift: int, seed: int,
                batch_size: int = 512) -> float:
    """Zhang (2019): probability that two independent random shifts of the same image (offsets
    uniform in ``[-S, S]^2``, drawn from ``seed``) get the same predicted class, right or wrong.
    """
    generator = torch.Generator().manual_seed(seed)
    first = random_offsets(len(images), max_shift, generator)
    second = random_offsets(len(images), max_shift, generator)
    predict = [predict_logits(model, shift_each(images, dx, dy), batch_size).argmax(dim=1)
               for dx, dy in (first, second)]
    return (predict[0] == predict[1]).sum().item() / len(images)


ONE_PIXEL_MOVES = ((1, 0), (-1, 0), (0, 1), (0, -1))


@torch.inference_mode()
def flip_rate(model: nn.Module, images: Tensor, batch_size: int = 512) -> float:
    """Azulay & Weiss (2019): probability that the top-1 class changes when the object moves by
    one pixel, averaged over the four directions (right, left, down, up)."""
    centred = predict_logits(model, images, batch_size).argmax(dim=1)
    flips = sum((predict_logits(model, shift(images, dx, dy), batch_size).argmax(dim=1)
                 != centred).sum().item() for dx, dy in ONE_PIXEL_MOVES)
    return flips / (len(ONE_PIXEL_MOVES) * len(images))
