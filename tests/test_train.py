import dataclasses

import pytest
import torch
from torch import nn

from gap_study.models import ModelConfig
from gap_study.train import (
    fit,
    load_checkpoint,
    matched_epochs,
    resolve_device,
    save_checkpoint,
    train_one_seed,
)


@pytest.fixture(scope="module")
def small(digits):
    """200 train / 100 test digits: enough to learn something in two epochs."""
    return dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200],
                               box_train=digits.box_train[:200], x_test=digits.x_test[:100],
                               y_test=digits.y_test[:100], box_test=digits.box_test[:100])


def _train(small, head="gap", seed=0, epochs=2, **variant):
    config = ModelConfig(head=head, in_channels=1, image_size=32, num_classes=10,
                         widths=(4, 8), dense_hidden=16)
    return train_one_seed(config, small, seed=seed, epochs=epochs, batch_size=32, lr=0.01,
                          device="cpu", progress=False, **variant)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("head", ["dense", "gmp"])
def test_same_seed_gives_bit_identical_weights_and_history(small, head):
    first, history1 = _train(small, head)
    second, history2 = _train(small, head)
    w1, w2 = _weights(first), _weights(second)
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    quality = ["seed", "epoch", "train_loss", "train_accuracy", "test_loss", "test_accuracy"]
    assert history1[quality].equals(history2[quality])


def test_different_seeds_give_different_weights(small):
    first, _ = _train(small, seed=0)
    second, _ = _train(small, seed=1)
    assert not torch.equal(first.head.fc.weight, second.head.fc.weight)


def test_history_has_one_row_per_epoch_and_training_learns(small):
    # dense learns fastest on this tiny backbone; two conv blocks are too few for GAP to
    # reach good accuracy in a few epochs
    _, history = _train(small, head="dense", epochs=3)
    assert history.epoch.tolist() == [1, 2, 3]
    assert list(history.columns) == ["fraction", "train_shift", "seed", "epoch", "train_loss",
                                     "train_accuracy", "test_loss", "test_accuracy",
                                     "epoch_seconds", "images_per_second"]
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert history.test_accuracy.iloc[-1] > 0.2  # well above the 0.1 of guessing
    assert (history.epoch_seconds > 0).all()


def test_checkpoint_round_trips_with_weights_only_loading(tmp_path, small):
    model, _ = _train(small, head="dense", epochs=1)
    path = tmp_path / "models" / "seed_0.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)  # no pickled code objects inside
    assert payload["config"]["head"] == "dense"
    loaded = load_checkpoint(path)
    assert not loaded.training and loaded.config == model.config
    x = torch.rand(3, 1, 32, 32)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed_0.pt"]


def test_resolve_device_picks_cpu_here_and_refuses_cuda_without_a_gpu():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_equal_weights_give_byte_identical_checkpoints(tmp_path, small):
    model, _ = _train(small, head="gmp", epochs=1)
    save_checkpoint(tmp_path / "a.pt", model)
    save_checkpoint(tmp_path / "b" / "seed_3.pt", model)
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "seed_3.pt").read_bytes()


@pytest.mark.parametrize(("full", "subset", "batch", "expected"), [
    (200, 200, 32, 2),    # the whole set: the epochs asked for
    (200, 100, 32, 4),    # 7 steps an epoch on all of it, 4 on half: 14 steps need 4 epochs
    (1347, 135, 64, 110),  # digits at 10%: 15 x 22 = 330 steps, 3 a epoch
])
def test_matched_epochs_give_a_subset_at_least_the_optimizer_steps_of_the_whole(
        full, subset, batch, expected):
    epochs = 15 if full == 1347 else 2
    assert matched_epochs(epochs, full, subset, batch) == expected


def test_a_fraction_trains_on_its_subset_for_the_matched_epochs(small):
    _, history = _train(small, fraction=0.5, epochs=2)
    # 4 epochs, the test set evaluated about as often as in 2 epochs on all the data
    assert history.epoch.tolist() == [2, 4] and (history.fraction == 0.5).all()
    # images per second over 100 images a pass, not 200
    assert history.images_per_second.mul(history.epoch_seconds).round().eq(100).all()


class _Positions(nn.Module):
    """Records where the single bright pixel of each training image is, then classifies."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(1, 2)
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        if self.training:
            flat = x.flatten(1).argmax(dim=1)
            self.seen.append(torch.stack([flat % x.shape[-1], flat // x.shape[-1]], dim=1))
        return self.fc(x.mean(dim=(1, 2, 3))[:, None])


def test_training_shift_moves_each_image_by_its_own_offset_within_the_bound():
    images = torch.zeros(64, 1, 11, 11)
    images[:, :, 5, 5] = 1.0  # a dot in the centre
    labels = torch.zeros(64, dtype=torch.long)
    model = _Positions()
    fit(model, images, labels, images[:4], labels[:4], epochs=3, batch_size=16, lr=0.1,
        train_shift=2, generator=torch.Generator().manual_seed(0), progress=False)
    offsets = torch.cat(model.seen) - 5
    assert offsets.abs().max() == 2  # within [-2, 2]^2 ...
    assert len({tuple(o) for o in offsets.tolist()}) == 25  # ... and all of it is used
    assert images[:, :, 5, 5].eq(1).all()  # the training set itself is not changed


def test_history_has_a_row_every_eval_every_epochs_and_after_the_last():
    images, labels = torch.rand(20, 1, 6, 6), torch.arange(20) % 2
    model = _Positions()
    history = fit(model, images, labels, images, labels, epochs=5, batch_size=8, lr=0.1,
                  eval_every=2, generator=torch.Generator().manual_seed(0), progress=False)
    assert history.epoch.tolist() == [2, 4, 5]
    # running train metrics cover every minibatch since the previous row: 3 per epoch
    assert len(model.seen) == 15
    assert history.images_per_second.mul(history.epoch_seconds).round().eq(20).all()


def test_training_with_shifts_is_reproducible_and_differs_from_centred(small):
    first, _ = _train(small, train_shift=3)
    second, history = _train(small, train_shift=3)
    centred, _ = _train(small)
    assert torch.equal(first.head.fc.weight, second.head.fc.weight)
    assert not torch.equal(first.head.fc.weight, centred.head.fc.weight)
    assert (history.train_shift == 3).all()
