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

from gap_study.canvas import random_offsets, shift, shift_each

__all__ = [
    "accuracy_by_radius",
    "consistency",
    "flip_rate",
    "loss_and_accuracy",
    "overfitting_metrics",
    "predict_logits",
    "shift_accuracy_grid",
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


@torch.inference_mode()
def shift_accuracy_grid(model: nn.Module, images: Tensor, labels: Tensor, max_shift: int,
                        batch_size: int = 512) -> pd.DataFrame:
    """Accuracy with every image moved by each integer ``(dx, dy)`` in ``[-S, S]^2``.

    Returns one row per offset: ``dx, dy, radius = max(|dx|, |dy|), accuracy``. Small image
    sets are evaluated several shifted copies per forward pass (``batch_size`` images each).
    """
    if max_shift < 0:
        raise ValueError(f"max_shift must be >= 0, got {max_shift}")
    offsets = [(dx, dy) for dy in range(-max_shift, max_shift + 1)
               for dx in range(-max_shift, max_shift + 1)]
    offsets_per_pass = max(1, batch_size // len(images))
    correct = []
    for i in range(0, len(offsets), offsets_per_pass):
        chunk = offsets[i:i + offsets_per_pass]
        batch = torch.cat([shift(images, dx, dy) for dx, dy in chunk])
        predicted = predict_logits(model, batch, batch_size).argmax(dim=1)
        hits = (predicted == labels.repeat(len(chunk))).view(len(chunk), -1)
        correct.append(hits.sum(dim=1))
    counts = torch.cat(correct).cpu().numpy()
    grid = pd.DataFrame(offsets, columns=["dx", "dy"])
    grid["radius"] = np.maximum(grid.dx.abs(), grid.dy.abs())
    grid["accuracy"] = counts / len(images)
    return grid


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
