import dataclasses

import pytest
import torch

from gap_study.models import ModelConfig
from gap_study.train import load_checkpoint, resolve_device, save_checkpoint, train_one_seed


@pytest.fixture(scope="module")
def small(digits):
    """200 train / 100 test digits: enough to learn something in two epochs."""
    return dataclasses.replace(digits, x_train=digits.x_train[:200], y_train=digits.y_train[:200],
                               box_train=digits.box_train[:200], x_test=digits.x_test[:100],
                               y_test=digits.y_test[:100], box_test=digits.box_test[:100])


def _train(small, head="gap", seed=0, epochs=2):
    config = ModelConfig(head=head, in_channels=1, image_size=32, num_classes=10,
                         widths=(4, 8), dense_hidden=16)
    return train_one_seed(config, small, seed=seed, epochs=epochs, batch_size=32, lr=0.01,
                          device="cpu", progress=False)


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
    assert list(history.columns) == ["seed", "epoch", "train_loss", "train_accuracy",
                                     "test_loss", "test_accuracy", "epoch_seconds",
                                     "images_per_second"]
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
