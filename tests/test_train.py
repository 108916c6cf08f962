import dataclasses

import pytest
import torch
from builders import tiny_config, tiny_settings, train_small
from torch import nn

from gap_study.pipeline import runtime
from gap_study.pipeline.params import TrainParams
from gap_study.pipeline.paths import Layout, RunId
from gap_study.stages.train import fit, matched_epochs, read_learning_rates, train_run


def _settings(batch_size: int) -> TrainParams:
    return tiny_settings().model_copy(update={"batch_size": batch_size})


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("head", ["dense", "gmp"])
def test_same_seed_gives_bit_identical_weights_and_history(small, head):
    first, history1 = train_small(small, head)
    second, history2 = train_small(small, head)
    w1, w2 = _weights(first), _weights(second)
    assert w1.keys() == w2.keys()
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    quality = ["seed", "epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy"]
    assert history1[quality].equals(history2[quality])


@pytest.mark.parametrize("head, variant", [
    ("dense", {}), ("gap", {"downsample": "blurmax", "padding": "circular"})])
def test_filling_new_tensors_under_determinism_changes_no_weight(small, monkeypatch, head,
                                                                 variant):
    config = dataclasses.replace(tiny_config(head, small.image_size), **variant)
    trained = []
    for fill in (True, False):
        monkeypatch.setattr(runtime, "FILL_UNINITIALIZED_MEMORY", fill)
        model, _ = train_small(small, epochs=1, config=config)
        assert torch.utils.deterministic.fill_uninitialized_memory is fill
        trained.append(_weights(model))
    assert all(torch.equal(trained[0][k], v) for k, v in trained[1].items())


def test_different_seeds_give_different_weights(small):
    first, _ = train_small(small, seed=0)
    second, _ = train_small(small, seed=1)
    assert not torch.equal(first.head.fc.weight, second.head.fc.weight)


def test_history_has_one_row_per_epoch_and_training_learns(small):
    # dense learns fastest on this tiny backbone; two conv blocks are too few for GAP to
    # reach good accuracy in a few epochs. Seed 0 stalls for its first epochs at this learning
    # rate on these 200 images (train accuracy 0.14 after 3); seeds 1 and 2 do not
    _, history = train_small(small, head="dense", epochs=3, seed=1)
    assert history.epoch.tolist() == [1, 2, 3]
    assert list(history.columns) == ["fraction", "train_shift", "seed", "epoch", "train_loss",
                                     "train_accuracy", "val_loss", "val_accuracy",
                                     "epoch_seconds", "images_per_second"]
    assert history.train_loss.iloc[-1] < history.train_loss.iloc[0]
    assert history.val_accuracy.iloc[-1] > 0.2  # well above the 0.1 of guessing
    assert (history.epoch_seconds > 0).all()


@pytest.mark.parametrize(("full", "subset", "batch", "expected"), [
    (200, 200, 32, 2),    # the whole set: the epochs asked for
    (200, 100, 32, 4),    # 7 steps an epoch on all of it, 4 on half: 14 steps need 4 epochs
    (1347, 135, 64, 110),  # digits at 10%: 15 x 22 = 330 steps, 3 a epoch
])
def test_matched_epochs_give_a_subset_at_least_the_optimizer_steps_of_the_whole(
        full, subset, batch, expected):
    epochs = 15 if full == 1347 else 2
    assert matched_epochs(epochs, full, subset, batch, drop_last=False) == expected


def test_a_fraction_trains_on_its_subset_for_the_matched_epochs(small):
    _, history = train_small(small, fraction=0.5, epochs=2)
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
    fit(model, images, labels, images[:4], labels[:4], _settings(16), lr=0.1, epochs=3,
        train_shift=2, generator=torch.Generator().manual_seed(0), progress=False)
    offsets = torch.cat(model.seen) - 5
    assert offsets.abs().max() == 2  # within [-2, 2]^2 ...
    assert len({tuple(o) for o in offsets.tolist()}) == 25  # ... and all of it is used
    assert images[:, :, 5, 5].eq(1).all()  # the training set itself is not changed


def test_history_has_a_row_every_eval_every_epochs_and_after_the_last():
    images, labels = torch.rand(20, 1, 6, 6), torch.arange(20) % 2
    model = _Positions()
    history = fit(model, images, labels, images, labels, _settings(8), lr=0.1, epochs=5,
                  eval_every=2, generator=torch.Generator().manual_seed(0), progress=False)
    assert history.epoch.tolist() == [2, 4, 5]
    # running train metrics cover every minibatch since the previous row: 3 per epoch
    assert len(model.seen) == 15
    assert history.images_per_second.mul(history.epoch_seconds).round().eq(20).all()


class _ValidationBatches(_Positions):
    """Records how many images each forward pass in eval mode (the validation) takes."""

    def __init__(self):
        super().__init__()
        self.validation_batches: list[int] = []

    def forward(self, x):
        if not self.training:
            self.validation_batches.append(len(x))
        return super().forward(x)


def test_validation_takes_train_validation_batch_size_images_per_forward_pass():
    images, labels = torch.rand(20, 1, 6, 6), torch.arange(20) % 2
    model = _ValidationBatches()
    settings = _settings(8).model_copy(update={"validation_batch_size": 7})
    fit(model, images, labels, images, labels, settings, lr=0.1, epochs=2,
        generator=torch.Generator().manual_seed(0), progress=False)
    assert model.validation_batches == [7, 7, 6] * 2  # 20 images, after each of 2 epochs


def test_training_with_shifts_is_reproducible_and_differs_from_centred(small):
    first, _ = train_small(small, train_shift=3)
    second, history = train_small(small, train_shift=3)
    centred, _ = train_small(small)
    assert torch.equal(first.head.fc.weight, second.head.fc.weight)
    assert not torch.equal(first.head.fc.weight, centred.head.fc.weight)
    assert (history.train_shift == 3).all()


def test_a_run_trains_with_its_own_fraction_shift_and_seed_and_the_stage_settings(small):
    settings = TrainParams(seeds=[0, 5], epochs=2, batch_size=32, schedule="constant",
                           drop_last=False, weight_decay=0.0, validation_batch_size=512,
                           fractions=[0.5, 1.0], shift=[0, 2])
    run = RunId(fraction=0.5, train_shift=2, seed=5)
    model, history = train_run(tiny_config("gap"), small, run, settings, 0.01, device="cpu",
                               progress=False)
    expected, expected_history = train_small(small, "gap", seed=5, fraction=0.5, train_shift=2)
    assert torch.equal(model.head.fc.weight, expected.head.fc.weight)
    assert history.drop(columns=["epoch_seconds", "images_per_second"]).equals(
        expected_history.drop(columns=["epoch_seconds", "images_per_second"]))
    assert (history[["fraction", "train_shift", "seed"]].drop_duplicates().values.tolist()
            == [[0.5, 2, 5]])


def _rates_file(tmp_path, text: str | None) -> Layout:
    layout = Layout(tmp_path)
    if text is not None:
        layout.learning_rates.parent.mkdir(parents=True)
        layout.learning_rates.write_text(text)
    return layout


def test_the_tune_stages_rates_are_read_for_every_head(tmp_path):
    layout = _rates_file(tmp_path, '{"dense": 0.001, "gap": 0.01}')
    assert read_learning_rates(layout, ["gap"]) == {"dense": 0.001, "gap": 0.01}


@pytest.mark.parametrize(("text", "error", "message"), [
    (None, FileNotFoundError,
     r"reports/tune/learning_rates\.json is missing: .*run `dvc repro tune`"),
    ("", ValueError, r"reports/tune/learning_rates\.json is damaged \(Expecting value.*\); "
                     r"restore it with `dvc checkout --force reports/tune/learning_rates\.json`"
                     r", or .*`dvc repro -f -s tune`"),
    ('{"gap": -1}', ValueError, r"is damaged \(not a positive rate per head\)"),
    ('{"gap": "0.01"}', ValueError, r"is damaged \(not a positive rate per head\)"),
    ('{"gap": true}', ValueError, r"is damaged \(not a positive rate per head\)"),
    ('{"gap": 1' + "0" * 400 + "}", ValueError, r"is damaged \(not a positive rate per head\)"),
    ("{}", ValueError, r"has no learning rate for gap: the tune stage chose rates for no head"),
    ('{"dense": 0.001}', ValueError,
     r"learning_rates\.json has no learning rate for gap: the tune stage chose rates for "
     r"dense, .*Add the heads to `heads` in params\.yaml"),
])
def test_missing_damaged_or_incomplete_rates_stop_a_stage_naming_the_file_and_fix(
        tmp_path, text, error, message):
    with pytest.raises(error, match=message):
        read_learning_rates(_rates_file(tmp_path, text), ["gap"])
