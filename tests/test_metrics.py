import math

import numpy as np
import pandas as pd
import pytest
import torch
from builders import BATCH
from torch import Tensor, nn

from gap_study.data.canvas import random_offsets
from gap_study.measures.metrics import (
    accuracy_by_radius,
    all_pairs_flip_rate,
    all_pairs_flips_per_image,
    consistency,
    consistency_per_image,
    exact_consistency,
    exact_consistency_per_image,
    flip_rate,
    flip_rate_per_image,
    grid_accuracy,
    grid_offsets,
    image_outcomes,
    loss_and_accuracy,
    overfitting_metrics,
    shift_accuracy_per_image,
    shift_grid_predictions,
    shift_summary,
)


class LeftOrRight(nn.Module):
    """Class 0 when the image's mass is in columns 0-2 of a 5-wide image, class 1 otherwise."""

    def forward(self, x):
        return torch.stack([x[..., :3].sum(dim=(1, 2, 3)), x[..., 3:].sum(dim=(1, 2, 3))], dim=1)


def _dot_images(n=4, col=2):
    images = torch.zeros(n, 1, 5, 5)
    images[:, 0, 2, col] = 1.0
    return images


def test_loss_and_accuracy_have_known_values():
    images, labels = _dot_images(4), torch.tensor([0, 0, 1, 0])
    loss, accuracy = loss_and_accuracy(LeftOrRight(), images, labels, batch_size=BATCH)
    assert accuracy == 0.75
    # logits (1, 0): cross-entropy log(1 + e^-1) for class 0, log(1 + e) for class 1
    expected = (3 * math.log1p(math.exp(-1)) + math.log1p(math.e)) / 4
    assert loss == pytest.approx(expected, rel=1e-6)


def test_overfitting_gap_is_train_minus_test_accuracy():
    images = _dot_images(4)
    metrics = overfitting_metrics(LeftOrRight(), images, torch.zeros(4, dtype=torch.long),
                                  images, torch.tensor([0, 1, 0, 1]), batch_size=BATCH)
    assert metrics["train_accuracy"] == 1.0 and metrics["test_accuracy"] == 0.5
    assert metrics["overfit_gap"] == 0.5
    assert metrics["loss_gap"] == pytest.approx(metrics["test_loss"] - metrics["train_loss"])
    assert metrics["loss_gap"] > 0


def shift_accuracy_grid(model: nn.Module, images: Tensor, labels: Tensor, max_shift: int,
                        batch_size: int = 512) -> pd.DataFrame:
    """Accuracy with every image moved by each integer ``(dx, dy)`` in ``[-S, S]^2``: one row
    per offset, ``dx, dy, radius, accuracy``: the evaluate stage's two steps in one."""
    predictions = shift_grid_predictions(model, images, max_shift, batch_size)
    return grid_accuracy(predictions, labels.cpu().numpy(), max_shift)


@pytest.mark.parametrize("batch_size", [1, 3, 4, 1000])
def test_shift_grid_scores_every_offset_and_does_not_depend_on_batching(batch_size):
    # the dot sits in column 2: moving it right by one puts it on the "right" side
    grid = shift_accuracy_grid(LeftOrRight(), _dot_images(4), torch.zeros(4, dtype=torch.long),
                               max_shift=1, batch_size=batch_size)
    assert len(grid) == 9
    assert list(grid.columns) == ["dx", "dy", "radius", "accuracy"]
    expected = {(dx, dy): float(dx < 1) for dx in (-1, 0, 1) for dy in (-1, 0, 1)}
    assert dict(zip(zip(grid.dx, grid.dy, strict=True), grid.accuracy, strict=True)) == expected
    assert grid.loc[(grid.dx == 0) & (grid.dy == 0), "radius"].item() == 0
    assert set(grid.radius) == {0, 1}

    by_radius = accuracy_by_radius(grid)
    assert by_radius.to_dict("list") == {"radius": [0, 1], "accuracy": [1.0, 5 / 8]}
    assert shift_summary(grid) == {"shift_accuracy_mean": 6 / 9, "shift_accuracy_worst": 0.0}


def test_shift_grid_with_zero_shift_is_plain_accuracy_and_negative_is_refused():
    images, labels = _dot_images(4), torch.tensor([0, 1, 0, 0])
    grid = shift_accuracy_grid(LeftOrRight(), images, labels, max_shift=0)
    assert grid.accuracy.tolist() == [loss_and_accuracy(LeftOrRight(), images, labels,
                                                        batch_size=BATCH)[1]]
    with pytest.raises(ValueError, match="max_shift must be >= 0"):
        shift_accuracy_grid(LeftOrRight(), images, labels, max_shift=-1)


def test_accuracy_by_radius_averages_the_offsets_at_each_radius():
    grid = pd.DataFrame({"dx": [0, 1, -1, 2], "dy": [0, 1, 0, 0], "radius": [0, 1, 1, 2],
                         "accuracy": [1.0, 0.5, 0.25, 0.0]})
    assert accuracy_by_radius(grid).accuracy.tolist() == [1.0, 0.375, 0.0]


def test_consistency_counts_agreeing_predictions_under_two_random_shifts():
    images = _dot_images(200)
    # the prediction flips exactly when an offset has dx = 1, so agreement is known per image
    generator = torch.Generator().manual_seed(7)
    first, _ = random_offsets(200, 1, generator)
    second, _ = random_offsets(200, 1, generator)
    expected = ((first == 1) == (second == 1)).float().mean().item()
    assert consistency(LeftOrRight(), images, max_shift=1, seed=7,
                       batch_size=BATCH) == pytest.approx(expected)
    assert 0.4 < expected < 0.75  # 5/9 on average
    assert consistency(LeftOrRight(), images, max_shift=0, seed=7, batch_size=BATCH) == 1.0


def test_flip_rate_averages_the_four_one_pixel_moves():
    # the dot in column 2 changes side only when moved right: 1 of 4 moves flips
    assert flip_rate(LeftOrRight(), _dot_images(3), batch_size=BATCH) == 0.25
    assert flip_rate(LeftOrRight(), _dot_images(3, col=0), batch_size=BATCH) == 0.0


def _predictions(rows):
    """``int8 (images, offsets)`` class predictions from a list per image."""
    return np.array(rows, dtype=np.int8)


def test_exact_consistency_is_the_chance_two_random_grid_offsets_agree():
    # image 0: always class 1; image 1: class 0 at 3 of 4 offsets, class 2 at one
    predictions = _predictions([[1, 1, 1, 1], [0, 0, 0, 2]])
    assert exact_consistency(predictions) == pytest.approx((1.0 + (0.75**2 + 0.25**2)) / 2)


def test_all_pairs_flip_rate_counts_every_horizontal_vertical_and_diagonal_neighbour():
    # a 3x3 grid (max_shift 1) whose right column predicts another class
    grid = np.array([[0, 0, 1], [0, 0, 1], [0, 0, 1]], dtype=np.int8).reshape(1, 9)
    pairs = 3 * 2 + 2 * 3 + 2 * 2 * 2  # horizontal, vertical, two diagonals
    differing = 3 + 0 + 2 + 2  # one per row across the edge; each diagonal crosses it twice
    assert all_pairs_flip_rate(grid, max_shift=1) == pytest.approx(differing / pairs)


def test_the_grid_predictions_give_the_grid_accuracy_and_follow_the_offsets():
    images = _dot_images(3)
    predictions = shift_grid_predictions(LeftOrRight(), images, max_shift=1, batch_size=BATCH)
    assert predictions.shape == (3, 9) and predictions.dtype == np.int8
    assert grid_offsets(1)[2] == (1, -1)  # row by row: dy outer, dx inner
    # the dot in column 2 moves to column 3 (class 1) exactly when dx = 1
    assert predictions[0].tolist() == [0, 0, 1, 0, 0, 1, 0, 0, 1]
    grid = grid_accuracy(predictions, np.zeros(3, dtype=np.int64), max_shift=1)
    assert grid.accuracy.tolist() == [1, 1, 0, 1, 1, 0, 1, 1, 0]
    assert exact_consistency(predictions) == pytest.approx((2 / 3) ** 2 + (1 / 3) ** 2)


def test_per_image_outcomes_are_each_images_correctness_and_cross_entropy():
    images, labels = _dot_images(4), torch.tensor([0, 0, 1, 0])
    correct, loss = image_outcomes(LeftOrRight(), images, labels, batch_size=BATCH)
    assert correct.dtype == np.bool_ and correct.tolist() == [True, True, False, True]
    assert loss.dtype == np.float32
    # logits (1, 0): log(1 + e^-1) for class 0, log(1 + e) for class 1
    np.testing.assert_allclose(loss, [math.log1p(math.exp(-1))] * 2 + [math.log1p(math.e)]
                               + [math.log1p(math.exp(-1))], rtol=1e-6)
    run_loss, run_accuracy = loss_and_accuracy(LeftOrRight(), images, labels, batch_size=BATCH)
    assert correct.mean() == run_accuracy and loss.mean() == pytest.approx(run_loss, rel=1e-6)


def test_per_image_consistency_and_flips_average_to_the_run_metrics_exactly():
    images = _dot_images(200)
    images[::3] = _dot_images(67, col=0)  # a third never flips
    same = consistency_per_image(LeftOrRight(), images, max_shift=1, seed=7, batch_size=BATCH)
    assert same.dtype == np.bool_ and same.shape == (200,)
    assert same.mean() == consistency(LeftOrRight(), images, max_shift=1, seed=7, batch_size=BATCH)
    flips = flip_rate_per_image(LeftOrRight(), images, batch_size=BATCH)
    assert sorted(set(flips.tolist())) == [0.0, 0.25]  # column 0 never flips, column 2 once
    assert flips.mean() == flip_rate(LeftOrRight(), images, batch_size=BATCH)


def test_a_mean_of_quarters_is_the_float_flips_over_four_n_gives():
    # flip_rate is the mean of the per-image quarters only because this holds for any counts
    rng = np.random.default_rng(0)
    for n in (1, 3, 7, 450, 1000, 4501):
        flips = rng.integers(0, 5, n)
        assert float((flips / 4).mean()) == int(flips.sum()) / (4 * n)


def test_per_image_grid_metrics_average_to_the_run_metrics():
    # image 0: always class 1; image 1: class 0 at 8 of 9 offsets, class 2 at the corner
    predictions = _predictions([[1] * 9, [0] * 8 + [2]])
    per_image = exact_consistency_per_image(predictions)
    assert per_image.tolist() == pytest.approx([1.0, (8 / 9) ** 2 + (1 / 9) ** 2])
    assert per_image.mean() == exact_consistency(predictions)
    flips = all_pairs_flips_per_image(predictions, max_shift=1)
    assert flips[0] == 0 and flips[1] == pytest.approx(3 / 20)  # the corner's 3 neighbours
    assert flips.mean() == pytest.approx(all_pairs_flip_rate(predictions, 1), rel=1e-12)
    accuracy = shift_accuracy_per_image(predictions, np.array([1, 0]))
    assert accuracy.tolist() == pytest.approx([1.0, 8 / 9])
    grid = grid_accuracy(predictions, np.array([1, 0]), max_shift=1)
    assert accuracy.mean() == pytest.approx(shift_summary(grid)["shift_accuracy_mean"], rel=1e-12)
