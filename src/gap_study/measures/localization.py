"""Class activation maps and whether they point at the object (``docs/study.md``, "Metrics").

A head whose class score is linear in pooled feature maps has a class activation map (Zhou et
al. 2016), ``M_c(x, y) = sum_k w_ck f_k(x, y)``; the head module gives its weights
(``class_map_weights()``), and ``gap_study.nets.architecture.has_class_map`` says which heads have
one. Grad-CAM (Selvaraju et al. 2017) exists for every head. Pointing accuracy is judged against
three references that need no model: chance, the centre prior and the class-agnostic ink map.
On canvases holding two objects of different classes (``gap_study.data.two_objects``) each class's
map must point at its own object, which the ink map can do for at most one of the two.

Every pointing score is a share of hits, one per image (per object on the two-object
canvases): the ``*_hits`` functions return them by metric name, the ``*_summary`` functions
the run's metrics from them, exactly the shares computed before per-object values were kept.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gap_study.data.canvas import random_offsets, shift, shift_each
from gap_study.measures.metrics import predict_logits, share

__all__ = [
    "TWO_OBJECT_METRICS",
    "alone",
    "cam_examples",
    "centre_prior_hits",
    "class_activation_maps",
    "grad_cam",
    "ink_maps",
    "localization_hits",
    "localization_summary",
    "pointing_accuracy",
    "pointing_centre_prior",
    "pointing_chance",
    "pointing_hits",
    "recognised_alone",
    "two_object_hits",
    "two_object_metrics",
    "two_object_summary",
]


@torch.inference_mode()
def class_activation_maps(model: nn.Module, images: Tensor, classes: Tensor,
                          batch_size: int) -> Tensor:
    """CAM of class ``classes[i]`` for image ``i``, bilinearly upsampled to the image size:
    ``(N, H, W)``. Raises ``ValueError`` for a head without CAM (``dense``)."""
    if not hasattr(model.head, "class_map_weights"):
        raise ValueError(f"the {type(model.head).__name__} has no class activation map: its "
                         "classifier is not linear on pooled features")
    weights = model.head.class_map_weights()
    model.eval()
    maps = []
    for i in range(0, len(images), batch_size):
        features = model.features(images[i:i + batch_size])  # (n, C, h, w)
        chosen = weights[classes[i:i + batch_size]]  # (n, C)
        maps.append(torch.einsum("nc,nchw->nhw", chosen, features))
    return _to_image_size(torch.cat(maps), images)


def grad_cam(model: nn.Module, images: Tensor, classes: Tensor, batch_size: int) -> Tensor:
    """Grad-CAM of class ``classes[i]`` for image ``i``, bilinearly upsampled: ``(N, H, W)``.

    ``ReLU(sum_k a_k f_k)`` on the backbone's last map ``f``, ``a_k`` the class score's gradient
    with respect to ``f_k`` averaged over positions. Any head has one; for a head linear on
    globally averaged features ``a_k = w_ck / (h*w)``, so it is ``ReLU(CAM) / (h*w)``. A map
    that is zero everywhere peaks at the first pixel.
    """
    model.eval()
    maps = []
    for i in range(0, len(images), batch_size):
        with torch.no_grad():
            features = model.features(images[i:i + batch_size])
        features = features.detach().requires_grad_()
        with torch.enable_grad():
            scores = model.head(features).gather(1, classes[i:i + batch_size, None]).sum()
            (gradient,) = torch.autograd.grad(scores, features)
        weights = gradient.mean(dim=(2, 3))  # (n, C)
        maps.append(F.relu(torch.einsum("nc,nchw->nhw", weights, features.detach())))
    return _to_image_size(torch.cat(maps), images)


def ink_maps(images: Tensor) -> Tensor:
    """The class-agnostic reference map: the image summed over channels and blurred by a 3x3
    mean, ``(N, H, W)``. On a blank canvas its maximum lies on the object, whatever the class."""
    return F.avg_pool2d(images.sum(dim=1, keepdim=True), 3, stride=1, padding=1,
                        count_include_pad=False)[:, 0]


def _to_image_size(maps: Tensor, images: Tensor) -> Tensor:
    return F.interpolate(maps[:, None], size=images.shape[-2:], mode="bilinear",
                         align_corners=False)[:, 0]


def pointing_hits(cams: Tensor, boxes: Tensor) -> np.ndarray:
    """Whether each map's maximum falls inside its object's box ``(top, left, bottom, right)``,
    bottom/right exclusive: ``bool (N,)``. A map with the same value everywhere (a Grad-CAM
    that is zero throughout) points nowhere and is a miss, even on a box holding the first
    pixel, where its ``argmax`` lands."""
    n, _, w = cams.shape
    flat = cams.reshape(n, -1)
    peak = flat.argmax(dim=1)
    y, x = peak // w, peak % w
    boxes = boxes.to(cams.device)
    inside = (boxes[:, 0] <= y) & (y < boxes[:, 2]) & (boxes[:, 1] <= x) & (x < boxes[:, 3])
    points = flat.amax(dim=1) > flat.amin(dim=1)
    return (inside & points).cpu().numpy()


def pointing_accuracy(cams: Tensor, boxes: Tensor) -> float:
    """Fraction of maps whose maximum falls inside the object's box: the share of
    ``pointing_hits``."""
    return share(pointing_hits(cams, boxes))


def pointing_chance(boxes: Tensor, image_size: int) -> float:
    """Pointing accuracy of a map whose maximum lands uniformly at random: mean box area over
    canvas area."""
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return area.sum().item() / (len(boxes) * image_size * image_size)


def centre_prior_hits(boxes: Tensor, image_size: int) -> np.ndarray:
    """Whether each box contains the canvas's centre pixel ``(size // 2, size // 2)``:
    ``bool (N,)``."""
    centre = image_size // 2
    inside = ((boxes[:, 0] <= centre) & (centre < boxes[:, 2])
              & (boxes[:, 1] <= centre) & (centre < boxes[:, 3]))
    return inside.cpu().numpy()


def pointing_centre_prior(boxes: Tensor, image_size: int) -> float:
    """Pointing accuracy of a map that always peaks at the canvas's centre pixel: the share of
    boxes containing it (``centre_prior_hits``). Objects placed at the centre all contain it,
    so only on moved objects does pointing accuracy say more than this."""
    return share(centre_prior_hits(boxes, image_size))


def localization_hits(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor,
                      max_shift: int, seed: int, batch_size: int, *,
                      with_maps: bool = True) -> dict[str, np.ndarray]:
    """Per image, by metric name (``bool (N,)`` each): whether the true class's Grad-CAM and,
    with ``with_maps``, CAM point at the object, on centred images and on images moved by
    random offsets in ``[-S, S]^2`` (drawn from ``seed``; boxes move with them), and whether
    the centre prior and, on the moved images, the ink map do. A head without CAM has no CAM
    entries."""
    size = images.shape[-1]
    dx, dy = random_offsets(len(images), max_shift, torch.Generator().manual_seed(seed))
    moved_images = shift_each(images, dx, dy)
    moved_boxes = boxes + torch.stack([dy, dx, dy, dx], dim=1).to(boxes.device)
    hits = {}
    if with_maps:
        hits["pointing_accuracy"] = pointing_hits(
            class_activation_maps(model, images, labels, batch_size), boxes)
        hits["pointing_accuracy_shifted"] = pointing_hits(
            class_activation_maps(model, moved_images, labels, batch_size), moved_boxes)
    return {**hits,
            "pointing_gradcam": pointing_hits(grad_cam(model, images, labels, batch_size), boxes),
            "pointing_gradcam_shifted": pointing_hits(
                grad_cam(model, moved_images, labels, batch_size), moved_boxes),
            "pointing_centre_prior": centre_prior_hits(boxes, size),
            "pointing_centre_prior_shifted": centre_prior_hits(moved_boxes, size),
            "pointing_ink_shifted": pointing_hits(ink_maps(moved_images), moved_boxes)}


def localization_summary(hits: dict[str, np.ndarray], boxes: Tensor,
                         image_size: int) -> dict[str, float]:
    """The run's pointing metrics from ``localization_hits``: the share of each, the chance
    level of the centred ``boxes``, and ``nan`` for the CAM of a head without one."""
    def of(name: str) -> float:
        return share(hits[name]) if name in hits else math.nan

    return {"pointing_accuracy": of("pointing_accuracy"),
            "pointing_accuracy_shifted": of("pointing_accuracy_shifted"),
            "pointing_gradcam": of("pointing_gradcam"),
            "pointing_gradcam_shifted": of("pointing_gradcam_shifted"),
            "pointing_chance": pointing_chance(boxes, image_size),
            "pointing_centre_prior": of("pointing_centre_prior"),
            "pointing_centre_prior_shifted": of("pointing_centre_prior_shifted"),
            "pointing_ink_shifted": of("pointing_ink_shifted")}


TWO_OBJECT_METRICS = ("pointing_two_objects", "pointing_gradcam_two_objects",
                      "pointing_ink_two_objects", "pointing_centre_prior_two_objects",
                      "pointing_chance_two_objects", "recognised_two_objects",
                      *(f"{name}_recognised" for name in ("pointing_two_objects",
                                                         "pointing_gradcam_two_objects",
                                                         "pointing_ink_two_objects")))
# the pointing metrics also scored on the objects the model recognises alone (``_recognised``)
_CONDITIONED = ("pointing_two_objects", "pointing_gradcam_two_objects", "pointing_ink_two_objects")


def alone(images: Tensor, boxes: Tensor) -> Tensor:
    """Each object of each two-object canvas alone at its position, ``(2M, C, H, W)``, entry
    ``2 i + j`` for canvas i's object j: the canvas with every pixel outside that object's box
    set to 0. The boxes never touch and each holds exactly its object
    (``gap_study.data.two_objects``), so this is the object on a blank canvas where it lies."""
    size = images.shape[-1]
    rows = torch.arange(size, device=images.device)
    own = boxes.reshape(-1, 4)
    inside_rows = (rows >= own[:, :1]) & (rows < own[:, 2:3])  # (2M, H)
    inside_cols = (rows >= own[:, 1:2]) & (rows < own[:, 3:4])  # (2M, W)
    mask = (inside_rows[:, :, None] & inside_cols[:, None, :])[:, None]
    return images.repeat_interleave(2, dim=0) * mask


def recognised_alone(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor,
                     batch_size: int) -> np.ndarray:
    """``bool (2M,)``: whether ``model`` classifies each object of each two-object canvas
    correctly when it is shown ``alone`` at its position (``docs/study.md``, "Metrics": the
    map claim's pointing counts only objects the model recognises, so that a head that cannot
    recognise a moved object does not lose pointing for it)."""
    logits = predict_logits(model, alone(images, boxes), batch_size)
    return (logits.argmax(dim=1) == labels.reshape(-1)).cpu().numpy()


def two_object_hits(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor,
                    batch_size: int, *, with_maps: bool = True) -> dict[str, np.ndarray]:
    """Per object on canvases holding two objects of different classes (``images`` ``(M, C, H,
    W)``, ``labels`` ``(M, 2)``, ``boxes`` ``(M, 2, 4)``), by metric name, ``bool (2M,)`` each,
    entry ``2 i + j`` for canvas i's object j: whether that object's class's Grad-CAM and, with
    ``with_maps``, CAM peak inside its own box, whether the ink map and the centre prior do,
    and whether the model recognises the object alone (``recognised_alone``). Without canvases
    there are none."""
    if len(images) == 0:
        return {}
    size = images.shape[-1]
    each = images.repeat_interleave(2, dim=0)  # each canvas twice: once per class it holds
    classes, own = labels.reshape(-1), boxes.reshape(-1, 4)
    hits = ({"pointing_two_objects": pointing_hits(
        class_activation_maps(model, each, classes, batch_size), own)} if with_maps else {})
    return {**hits,
            "recognised_two_objects": recognised_alone(model, images, labels, boxes, batch_size),
            "pointing_gradcam_two_objects": pointing_hits(
                grad_cam(model, each, classes, batch_size), own),
            "pointing_ink_two_objects": pointing_hits(
                ink_maps(images).repeat_interleave(2, dim=0), own),
            "pointing_centre_prior_two_objects": centre_prior_hits(own, size)}


def two_object_summary(hits: dict[str, np.ndarray], boxes: Tensor,
                       image_size: int) -> dict[str, float]:
    """The run's two-object metrics (``TWO_OBJECT_METRICS``) from ``two_object_hits``: the
    share of each, the chance level of the ``(M, 2, 4)`` boxes, the share of objects
    recognised alone, and each pointing share over those objects alone (``_recognised``);
    ``nan`` for the CAM of a head without one, or with no object recognised, and every value
    ``nan`` without canvases."""
    if len(boxes) == 0:
        return dict.fromkeys(TWO_OBJECT_METRICS, math.nan)
    shares = {name: share(hits[name]) if name in hits else math.nan
              for name in TWO_OBJECT_METRICS[:4]}
    recognised = hits["recognised_two_objects"]
    return {**shares,
            "pointing_chance_two_objects": pointing_chance(boxes.reshape(-1, 4), image_size),
            "recognised_two_objects": share(recognised),
            **{f"{name}_recognised": share(hits[name][recognised]) if name in hits
               else math.nan for name in _CONDITIONED}}


def two_object_metrics(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor,
                       batch_size: int, *, with_maps: bool = True) -> dict[str, float]:
    """Pointing on canvases holding two objects of different classes (``images`` ``(M, C, H,
    W)``, ``labels`` ``(M, 2)``, ``boxes`` ``(M, 2, 4)``): for each canvas and each of its two
    classes, whether that class's map peaks inside that class's own box; means over canvas x
    class. The CAM (``nan`` without ``with_maps``) and Grad-CAM, with three references on the
    same canvases: the ink map, which has one peak for both classes and so scores at most one
    half, the centre prior and chance. Without canvases every value is ``nan``."""
    hits = two_object_hits(model, images, labels, boxes, batch_size, with_maps=with_maps)
    return two_object_summary(hits, boxes, images.shape[-1])


def cam_examples(model: nn.Module, images: Tensor, labels: Tensor, boxes: Tensor, *,
                 count: int, dx: int, dy: int, batch_size: int) -> dict[str, np.ndarray]:
    """The first ``count`` test images, centred and moved by ``(dx, dy)``, with the true class's
    CAM of each, for the report's overlays."""
    images, labels, boxes = images[:count], labels[:count], boxes[:count]
    moved = shift(images, dx, dy)
    move = torch.tensor([dy, dx, dy, dx], device=boxes.device)
    return {
        "images": images.cpu().numpy(),
        "cams": class_activation_maps(model, images, labels, batch_size).cpu().numpy(),
        "boxes": boxes.cpu().numpy(), "labels": labels.cpu().numpy(),
        "shifted_images": moved.cpu().numpy(),
        "shifted_cams": class_activation_maps(model, moved, labels, batch_size).cpu().numpy(),
        "shifted_boxes": (boxes + move).cpu().numpy(), "shift": np.array([dx, dy]),
    }
