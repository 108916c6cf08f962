"""Evaluation metrics of STUDY.md ("Metrics"): accuracy, loss, overfitting gap and the shift
accuracy grid. Every function takes a model and tensors and returns values; nothing is written.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gap_study.data import shift
from gap_study.models import NINHead, PooledLinearHead

__all__ = [
    "accuracy_by_radius",
    "cam_examples",
    "cam_weights",
    "class_activation_maps",
    "consistency",
    "flip_rate",
    "localization_metrics",
    "loss_and_accuracy",
    "overfitting_metrics",
    "pointing_accuracy",
    "pointing_centre_prior",
    "pointing_chance",
    "predict_logits",
    "random_offsets",
    "shift_accuracy_grid",
    "shift_each",
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


def shift_each(images: Tensor, dx: Tensor, dy: Tensor) -> Tensor:
    """Move image ``i`` by its own ``(dx[i], dy[i])`` (right, down), zero fill; ``(N, C, H, W)``.

    Same result as ``data.shift`` applied image by image, done in one gather.
    """
    n, c, h, w = images.shape
    pad = int(max(dx.abs().max(), dy.abs().max(), 0))
    padded = F.pad(images, (pad, pad, pad, pad))
    rows = torch.arange(h, device=images.device) + pad - dy.to(images.device)[:, None]  # (N, H)
    cols = torch.arange(w, device=images.device) + pad - dx.to(images.device)[:, None]  # (N, W)
    index = torch.arange(n, device=images.device)[:, None, None, None]
    return padded[index, torch.arange(c, device=images.device)[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def random_offsets(count: int, max_shift: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """``count`` offsets ``(dx, dy)``, each uniform on the integers of ``[-S, S]``."""
    drawn = torch.randint(-max_shift, max_shift + 1, (2, count), generator=generator)
    return drawn[0], drawn[1]


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


def cam_weights(head: nn.Module) -> Tensor | None:
    """``w_{c,k}`` of ``M_c = sum_k w_{c,k} f_k`` (Zhou et al. 2016), shape ``(K, C)``, for heads
    whose classifier is linear on pooled features; ``None`` for ``dense`` (its first layer mixes
    positions, so no per-position class map exists).

    ``avgmax`` pools each map twice; both weights multiply the same ``f_k``, so they add.
    ``nin`` maps each class with a 1x1 convolution: its weights are the CAM weights.
    """
    if isinstance(head, NINHead):
        return head.class_maps.weight[:, :, 0, 0]
    if isinstance(head, PooledLinearHead):
        weight = head.fc.weight
        if getattr(head.pool, "pool_type", None) == "avgmax":
            half = weight.shape[1] // 2
            return weight[:, :half] + weight[:, half:]
        return weight
    return None


@torch.inference_mode()
def class_activation_maps(model: nn.Module, images: Tensor, classes: Tensor,
                          batch_size: int = 512) -> Tensor:
    """CAM of class ``classes[i]`` for image ``i``, bilinearly upsampled to the image size:
    ``(N, H, W)``. Raises ``ValueError`` for a head without CAM (``dense``)."""
    weights = cam_weights(model.head)
    if weights is None:
        raise ValueError(f"the {type(model.head).__name__} has no class activation map: its "
                         "classifier is not linear on pooled features")
    model.eval()
    maps = []
    for i in range(0, len(images), batch_size):
        features = model.features(images[i:i + batch_size])  # (n, C, h, w)
        chosen = weights[classes[i:i + batch_size]]  # (n, C)
        maps.append(torch.einsum("nc,nchw->nhw", chosen, features))
    cams = torch.cat(maps)[:, None]
    return F.interpolate(cams, size=images.shape[-2:], mode="bilinear",
                         align_corners=False)[:, 0]


def pointing_accuracy(cams: Tensor, boxes: Tensor) -> float:
    """Fraction of maps whose maximum falls inside the object's box ``(top, left, bottom,
    right)``, bottom/right exclusive."""
    n, _, w = cams.shape
    peak = cams.reshape(n, -1).argmax(dim=1)
    y, x = peak // w, peak % w
    boxes = boxes.to(cams.device)
    inside = (boxes[:, 0] <= y) & (y < boxes[:, 2]) & (boxes[:, 1] <= x) & (x < boxes[:, 3])
    return inside.sum().item() / n


def pointing_chance(boxes: Tensor, image_size: int) -> float:
    """Pointing accuracy of a map whose maximum lands uniformly at random: mean box area over
    canvas area."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return area.sum().item() / (len(boxes) * image_size * image_size)


def pointing_centre_prior(boxes: Tensor, image_size: int) -> float:
    """Pointing accuracy of a map that always peaks at the canvas's centre pixel
    ``(size // 2, size // 2)``: the share of boxes containing it. Objects placed at the centre
    all contain it, so only on moved objects does pointing accuracy say more than this."""
    centre = image_size // 2
    inside = ((boxes[:, 0] <= centre) & (centre < boxes[:, 2])
              & (boxes[:, 1] <= centre) & (centre < boxes[:, 3]))
    return inside.sum().item() / len(boxes)


def localization_metrics(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor,
                         max_shift: int, seed: int, batch_size: int = 512) -> dict[str, float]:
    """Pointing accuracy of the true class's CAM on centred images and on images moved by
    random offsets in ``[-S, S]^2`` (drawn from ``seed``; boxes move with them), with two
    references: the chance level, and a map always peaking at the canvas centre, on the same
    centred and moved images. CAM values are ``nan`` for a head without CAM (``dense``)."""
    size = images.shape[-1]
    dx, dy = random_offsets(len(images), max_shift, torch.Generator().manual_seed(seed))
    moved_boxes = boxes + torch.stack([dy, dx, dy, dx], dim=1).to(boxes.device)
    references = {"pointing_chance": pointing_chance(boxes, size),
                  "pointing_centre_prior": pointing_centre_prior(boxes, size),
                  "pointing_centre_prior_shifted": pointing_centre_prior(moved_boxes, size)}
    if cam_weights(model.head) is None:
        return {"pointing_accuracy": math.nan, "pointing_accuracy_shifted": math.nan,
                **references}
    centred = pointing_accuracy(class_activation_maps(model, images, labels, batch_size), boxes)
    moved = class_activation_maps(model, shift_each(images, dx, dy), labels, batch_size)
    return {"pointing_accuracy": centred,
            "pointing_accuracy_shifted": pointing_accuracy(moved, moved_boxes), **references}


def cam_examples(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor, *,
                 count: int, dx: int, dy: int) -> dict[str, np.ndarray] | None:
    """The first ``count`` test images, centred and moved by ``(dx, dy)``, with the true class's
    CAM of each, for the report's overlays; ``None`` for a head without CAM."""
    if cam_weights(model.head) is None:
        return None
    images, labels, boxes = images[:count], labels[:count], boxes[:count]
    moved = shift(images, dx, dy)
    move = torch.tensor([dy, dx, dy, dx], device=boxes.device)
    return {
        "images": images.cpu().numpy(), "cams": class_activation_maps(model, images, labels)
        .cpu().numpy(), "boxes": boxes.cpu().numpy(), "labels": labels.cpu().numpy(),
        "shifted_images": moved.cpu().numpy(),
        "shifted_cams": class_activation_maps(model, moved, labels).cpu().numpy(),
        "shifted_boxes": (boxes + move).cpu().numpy(), "shift": np.array([dx, dy]),
    }
