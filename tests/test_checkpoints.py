"""Checkpoints: what goes in, what comes back, and equal weights in equal bytes."""

import torch

from gap_study.architecture import ModelConfig
from gap_study.checkpoints import load_checkpoint, save_checkpoint
from gap_study.models import build_model


def _model(head: str, seed: int = 0):
    torch.manual_seed(seed)
    config = ModelConfig(head=head, in_channels=1, image_size=12, num_classes=3, widths=(4, 8),
                         dense_hidden=5)
    return build_model(config)


def test_checkpoint_round_trips_with_weights_only_loading(tmp_path):
    model = _model("dense")
    path = tmp_path / "models" / "seed_0.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)  # no pickled code objects inside
    assert payload["config"]["head"] == "dense"
    loaded = load_checkpoint(path)
    assert not loaded.training and loaded.config == model.config
    x = torch.rand(3, 1, 12, 12)
    torch.testing.assert_close(loaded(x), model.eval()(x), rtol=0, atol=0)
    assert sorted(p.name for p in path.parent.iterdir()) == ["seed_0.pt"]


def test_equal_weights_give_byte_identical_checkpoints_and_other_weights_do_not(tmp_path):
    save_checkpoint(tmp_path / "a.pt", _model("gmp"))
    save_checkpoint(tmp_path / "b" / "seed_3.pt", _model("gmp"))
    save_checkpoint(tmp_path / "c.pt", _model("gmp", seed=1))
    assert (tmp_path / "a.pt").read_bytes() == (tmp_path / "b" / "seed_3.pt").read_bytes()
    assert (tmp_path / "a.pt").read_bytes() != (tmp_path / "c.pt").read_bytes()
