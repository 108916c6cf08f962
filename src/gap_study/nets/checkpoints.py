"""Trained models on disk: config and weights in one file that ``torch.load(weights_only=True)``
reads, byte-identical for equal weights.

A checkpoint's *payload* (``checkpoint_payload``) is what the file holds: plain tensors and
builtins, so a training task can return it from any worker and the stage writes it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from gap_study.nets.architecture import ModelConfig
from gap_study.nets.models import ClassifierNet, build_model
from gap_study.pipeline.io import atomic_path
from gap_study.pipeline.runtime import resolve_device

__all__ = [
    "checkpoint_payload",
    "model_from_payload",
    "read_checkpoint",
    "write_checkpoint",
]

Payload = dict[str, Any]


def checkpoint_payload(model: ClassifierNet) -> Payload:
    """``{"config": ..., "state_dict": ...}`` of ``model``: builtins and CPU tensors only."""
    return {"config": model.config.to_dict(),
            "state_dict": {k: v.detach().cpu().contiguous() for k, v in
                           model.state_dict().items()}}


def write_checkpoint(path: str | Path, payload: Payload) -> None:
    """Write a payload atomically; equal payloads give byte-identical files."""
    # Through a file object: torch.save names the archive's records after a file path, and
    # the temporary name is random, so saving to a path would make equal weights differ in bytes.
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)


def read_checkpoint(path: str | Path) -> Payload:
    """The payload of a checkpoint file, tensors on the CPU."""
    return torch.load(path, map_location="cpu", weights_only=True)


def model_from_payload(payload: Payload, device: str | torch.device = "cpu") -> ClassifierNet:
    """Rebuild a payload's model, in eval mode, on ``device``."""
    device = resolve_device(device) if isinstance(device, str) else device
    model = build_model(ModelConfig(**payload["config"]))
    model.load_state_dict(payload["state_dict"])
    return model.to(device=device, memory_format=torch.channels_last).eval()
