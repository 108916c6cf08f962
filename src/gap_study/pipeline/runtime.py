"""Where and how a run computes: the device, seeding and deterministic kernels, copying
tensors to the device.

Same data, config and seed on the same machine give bit-identical results: the seed fixes
every random draw, and ``torch.use_deterministic_algorithms`` rules out nondeterministic
kernels.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from torch import Tensor

# cuBLAS needs this to be deterministic; it must be set before CUDA initialises.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

# Deterministic mode also fills every new uninitialised tensor with NaN (or the integer
# maximum), a debugging aid that shows a kernel reading memory it never wrote. No kernel a
# run uses does that: the weights are bit-identical without the fills (a test pins it), and
# they cost about 5% of a `gap` training step (benchmarks/README.md, "Deterministic mode's NaN
# fills").
FILL_UNINITIALIZED_MEMORY = False

__all__ = ["resolve_device", "seed_everything", "to_device", "torch_threads"]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; other names are taken as they are,
    and refused where this machine lacks them (CUDA, that CUDA index, or MPS)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available; "
                         "use device: auto or cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise ValueError(f"device {name!r} was asked for but this machine has "
                         f"{torch.cuda.device_count()} CUDA device(s), numbered from 0; "
                         "use device: cuda or auto")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {name!r} was asked for but MPS is not available; "
                         "use device: auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and require deterministic kernels (without filling new
    tensors: ``FILL_UNINITIALIZED_MEMORY``)."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global RNG, in case a library draws on it)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.utils.deterministic.fill_uninitialized_memory = FILL_UNINITIALIZED_MEMORY
    torch.backends.cudnn.benchmark = False


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy to ``device``; images (4-d) in channels_last. On CUDA the copy goes through pinned
    memory without blocking the host."""
    layout = torch.channels_last if tensor.dim() == 4 else torch.contiguous_format
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, memory_format=layout, non_blocking=device.type == "cuda")


@contextmanager
def torch_threads(threads: int) -> Iterator[None]:
    """Run the block with ``threads`` torch intra-op threads, then restore the number before:
    a result can depend on it (kernels split their reductions by thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)
