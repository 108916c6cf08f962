"""Checkpoints: what goes in, what comes back, and equal weights in equal bytes."""

import builtins
import hashlib

import pytest
import torch

from gap_study.nets import checkpoints
from gap_study.nets.architecture import ModelConfig
from gap_study.nets.checkpoints import (
    CheckpointError,
    checkpoint_payload,
    file_sha256,
    model_from_payload,
    read_checkpoint,
    record_key,
    write_checkpoint,
)
from gap_study.nets.models import build_model
from gap_study.pipeline.io import DiskFullError, write_json


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


def _project(tmp_path):
    """A project root (``dvc.yaml`` and ``params.yaml``) with one trained checkpoint recorded in
    ``reports/train/run.json`` as the train stage records it."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    (tmp_path / "params.yaml").write_text("{}\n")
    path = tmp_path / "models" / "dense" / "fraction_1-shift_0-seed_0.pt"
    digest = write_checkpoint(path, checkpoint_payload(_model("dense")))
    record = tmp_path / "reports" / "train" / "run.json"
    write_json(record, {"checkpoints": {record_key(path, tmp_path): digest}})
    return path, record


def test_write_checkpoint_returns_the_sha256_of_the_bytes_it_wrote(tmp_path):
    path = tmp_path / "a.pt"
    digest = write_checkpoint(path, checkpoint_payload(_model("gap")))
    assert digest == hashlib.sha256(path.read_bytes()).hexdigest() == file_sha256(path)


def test_a_recorded_checkpoint_reads_back(tmp_path):
    path, record = _project(tmp_path)
    assert read_checkpoint(path, record)["config"]["head"] == "dense"


def test_one_flipped_byte_is_refused_naming_the_file_and_the_fix(tmp_path):
    path, record = _project(tmp_path)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    read_checkpoint(path)  # torch.load does not notice: without the record it loads silently
    with pytest.raises(CheckpointError, match=r"models/dense/fraction_1-shift_0-seed_0\.pt has "
                       r"changed.*dvc checkout --force models/dense/fraction_1-shift_0-seed_0\.pt.*"
                       r"dvc repro -f -s train"):
        read_checkpoint(path, record)


def test_a_truncated_checkpoint_is_refused_naming_the_file(tmp_path):
    path, record = _project(tmp_path)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match=r"models/dense/fraction_1-shift_0-seed_0\.pt has "
                       r"changed"):
        read_checkpoint(path, record)
    # unrecorded, torch's own error (OSError: [Errno 22] Invalid argument) gets the path
    with pytest.raises(CheckpointError, match=r"fraction_1-shift_0-seed_0\.pt is damaged "
                       r"\(truncated or not a checkpoint.*dvc repro -f -s train"):
        read_checkpoint(path)


def test_a_checkpoint_its_run_record_does_not_name_is_refused(tmp_path):
    path, record = _project(tmp_path)
    other = path.with_name("fraction_1-shift_0-seed_1.pt")
    write_checkpoint(other, checkpoint_payload(_model("dense", seed=1)))
    with pytest.raises(CheckpointError, match=r"run record .*run\.json has no SHA-256 for it"):
        read_checkpoint(other, record)
    record.unlink()
    with pytest.raises(CheckpointError, match=r"run record .*run\.json is missing"):
        read_checkpoint(path, record)


def test_a_full_disk_while_saving_says_disk_full_with_the_path(tmp_path, monkeypatch):
    # /dev/full fails every write with ENOSPC: torch.save reports it as "unexpected pos"
    monkeypatch.setattr(checkpoints, "open", lambda *_: builtins.open("/dev/full", "wb"),
                        raising=False)
    path = tmp_path / "models" / "seed_0.pt"
    with pytest.raises(DiskFullError, match=r"disk full: could not write .*models/seed_0\.pt"):
        write_checkpoint(path, checkpoint_payload(_model("dense")))
    assert list(path.parent.iterdir()) == []  # neither the file nor a temporary is left
