"""Device resolution and seeding."""

import numpy as np
import pytest
import torch

from gap_study.pipeline import runtime
from gap_study.pipeline.runtime import resolve_device, seed_everything, to_device


@pytest.mark.parametrize("cuda", [True, False])
def test_auto_picks_cuda_exactly_when_it_is_available(monkeypatch, cuda):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert resolve_device("auto") == torch.device("cuda" if cuda else "cpu")


def test_named_devices_are_taken_as_they_are_and_cuda_is_refused_without_a_gpu(monkeypatch):
    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'cuda:1' was asked for but CUDA is not available"):
        resolve_device("cuda:1")


def test_a_cuda_index_past_the_count_and_mps_without_it_are_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match=r"'cuda:1' was asked for but this machine has 1 CUDA "
                                         r"device\(s\), numbered from 0"):
        resolve_device("cuda:1")
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    with pytest.raises(ValueError, match="'mps' was asked for but MPS is not available"):
        resolve_device("mps")


def test_seeding_repeats_every_generator_and_turns_on_deterministic_kernels():
    draws = []
    for _ in range(2):
        seed_everything(3)
        draws.append((np.random.rand(), torch.rand(2).tolist()))  # noqa: NPY002
    assert draws[0] == draws[1]
    assert torch.are_deterministic_algorithms_enabled()


def test_images_go_to_the_device_channels_last_and_other_tensors_stay_contiguous():
    images = to_device(torch.rand(2, 3, 4, 5), torch.device("cpu"))
    assert images.is_contiguous(memory_format=torch.channels_last)
    labels = to_device(torch.arange(4), torch.device("cpu"))
    assert labels.is_contiguous()


def test_cublas_is_configured_for_deterministic_kernels_on_import():
    import os

    assert runtime.__name__ == "gap_study.pipeline.runtime"  # imported above
    # the two values cuBLAS documents as deterministic; a user's own (set first) is kept
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] in (":4096:8", ":16:8")
