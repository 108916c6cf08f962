"""Checkpoints: what goes in, what comes back, and equal weights in equal bytes."""

import torch

from gap_study.nets.architecture import ModelConfig
from gap_study.nets.checkpoints import (
    checkpoint_payload,
    model_from_payload,
    read_checkpoint,
    write_checkpoint,
)
from gap_study.nets.models import build_model


def _model(head: str, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(head=head, in_channels=1, image_size=12, num_classes=3, widths=(4, 8),
                         dense_hidden=5)
    return build_model(config)


def _save(path, model) -> None:
    write_checkpoint(path, checkpoint_payload(model))


def test_checkpoint_round_trips_with_weights_only_loading(tmp_path):
    model = _model("dense")
    path = tmp_path / "models" / "seed_0.pt"
    _save(path, model)
    payload = torch.load(path, weights_only=True)  # no pickled code objects inside
    assert payload["config"]["head"] == "dense"
    loaded = model_from_payload(read_checkpoint(path))
    assert not loaded.training and loaded.config == model.config
    # the weights come back exactly: a save and a load copy bytes
    assert loaded.state_dict().keys() == model.state_dict().keys()
    assert all(torch.equal(loaded.state_dict()[k], v) for k, v in model.state_dict().items())
    # and so do the logits, compared in the loaded model's memory format (channels_last): the
    # same kernels on the same data. A contiguous model runs other convolution kernels (oneDNN
    # picks them by the CPU's instruction set), which may differ in the last bits.
    x = torch.rand(3, 1, 12, 12)
    expected = model.to(memory_format=torch.channels_last).eval()(x)
    torch.testing.assert_close(loaded(x), expected, rtol=0, atol=0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed_0.pt"]


def test_equal_weights_give_byte_identical_checkpoints_and_other_weights_do_not(tmp_path):
    _save(tmp_path / "a.pt", _model("gmp"))
    _save(tmp_path / "b" / "seed_3.pt", _model("gmp"))
    _save(tmp_path / "c.pt", _model("gmp", seed=1))
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "seed_3.pt").read_bytes()
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "c.pt").read_bytes()
