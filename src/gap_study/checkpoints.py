"""Trained models on disk: config and weights in one file that ``torch.load(weights_only=True)``
reads, byte-identical for equal weights."""

from __future__ import annotations

from pathlib import Path

import torch

from gap_study.architecture import ModelConfig
from gap_study.io import atomic_path
from gap_study.models import ClassifierNet, build_model
from gap_study.runtime import resolve_device

__all__ = ["load_checkpoint", "save_checkpoint"]


def save_checkpoint(path: str | Path, model: ClassifierNet) -> None:
    """Save config and weights (plain tensors and builtins only, so ``weights_only`` loads it).

    Equal weights give byte-identical files.
    """
    payload = {"config": model.config.to_dict(),
               "state_dict": {k: v.detach().cpu().contiguous() for k, v in
                              model.state_dict().items()}}
    # Through a file object: torch.save names the archive's records after a file path, and
    # the temporary name is random, so saving to a path would make equal weights differ in bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> ClassifierNet:
    """Rebuild the model saved by ``save_checkpoint``, in eval mode, on ``device``."""
    device = resolve_device(device) if isinstance(device, str) else device
    payload = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(ModelConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device=device, memory_format=torch.channels_last).eval()
