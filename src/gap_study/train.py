"""A readable, deterministic training loop (Adam, cross-entropy, per-epoch history).

Same data, config and seed on the same machine give bit-identical weights: the seed fixes
the initial weights and the minibatch order, and ``torch.use_deterministic_algorithms``
rules out nondeterministic kernels.
"""

from __future__ import annotations

import math
import os
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm import tqdm  # the text bar: it streams to the terminal under papermill too

from gap_study.data import CanvasDataset, fraction_subset, to_float
from gap_study.evaluate import loss_and_accuracy, random_offsets, shift_each
from gap_study.io import atomic_path
from gap_study.models import ClassifierNet, ModelConfig, build_model

# cuBLAS needs this to be deterministic; it must be set before CUDA initialises.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

__all__ = [
    "fit",
    "load_checkpoint",
    "matched_epochs",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
    "to_device",
    "train_one_seed",
]


def resolve_device(name: str = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else the CPU; other names are taken as they are."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} was asked for but CUDA is not available; "
                         "use device: auto or cpu")
    return device


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and require deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the legacy global RNG, in case a library draws on it)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def fit(model: nn.Module, x_train: Tensor, y_train: Tensor, x_test: Tensor, y_test: Tensor, *,
        epochs: int, batch_size: int, lr: float, weight_decay: float = 0.0, train_shift: int = 0,
        eval_every: int = 1, generator: torch.Generator, progress: bool = True,
        desc: str = "train") -> pd.DataFrame:
    """Train ``model`` in place on tensors already on its device; return its history.

    ``train_shift > 0`` moves each training image by its own random offset, uniform in
    ``[-train_shift, train_shift]^2`` (zero fill), redrawn every time the image is used.

    One history row every ``eval_every`` epochs and after the last: ``epoch``, then
    ``train_loss, train_accuracy`` (running, over the minibatches since the previous row, in
    train mode), ``test_loss, test_accuracy`` (eval mode, after that epoch) and
    ``epoch_seconds, images_per_second`` (the training passes alone, per epoch).
    """
    device = x_train.device
    n = len(x_train)
    # fused: one kernel per step for all parameters; the dense head's million-plus weights
    # made the unfused update a fifth of its training time on a CPU
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    history = []
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    passes, since = 0, time.perf_counter()
    for epoch in tqdm(range(1, epochs + 1), desc=desc, unit="epoch", disable=not progress):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        for i in range(0, n, batch_size):
            idx = order[i:i + batch_size]
            images = x_train[idx]
            if train_shift:
                dx, dy = random_offsets(len(idx), train_shift, generator)
                images = shift_each(images, dx, dy).contiguous(memory_format=torch.channels_last)
            targets = y_train[idx]
            logits = model(images)
            loss = F.cross_entropy(logits, targets)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            # Accumulate on the device: no host sync inside the loop.
            loss_sum.add_(loss.detach(), alpha=len(idx))
            correct += (logits.argmax(dim=1) == targets).sum()
        passes += 1
        if epoch % eval_every and epoch != epochs:
            continue
        train_loss, train_correct = loss_sum.item(), correct.item()  # syncs the device
        seconds = time.perf_counter() - since
        test_loss, test_accuracy = loss_and_accuracy(model, x_test, y_test)
        history.append({
            "epoch": epoch,
            "train_loss": train_loss / (n * passes),
            "train_accuracy": train_correct / (n * passes),
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "epoch_seconds": seconds / passes,
            "images_per_second": n * passes / seconds,
        })
        loss_sum.zero_()
        correct.zero_()
        passes, since = 0, time.perf_counter()
    return pd.DataFrame(history)


def matched_epochs(epochs: int, full_size: int, subset_size: int, batch_size: int) -> int:
    """Epochs over ``subset_size`` images that take at least as many optimizer steps as
    ``epochs`` over ``full_size`` images, so a smaller training set gets the same training
    budget: a learning curve then shows the effect of data, not of a shorter training."""
    steps = epochs * math.ceil(full_size / batch_size)
    return math.ceil(steps / math.ceil(subset_size / batch_size))


def train_one_seed(config: ModelConfig, data: CanvasDataset, *, seed: int, epochs: int,
                   batch_size: int, lr: float, weight_decay: float = 0.0, fraction: float = 1.0,
                   train_shift: int = 0, device: str | torch.device = "auto",
                   progress: bool = True) -> tuple[ClassifierNet, pd.DataFrame]:
    """Build ``config``'s model from ``seed`` and train it on ``data``; return model and history.

    ``fraction < 1`` trains on ``data.fraction_subset`` of the training set, for
    ``matched_epochs`` (the same number of optimizer steps as ``epochs`` on all of it);
    ``train_shift`` is the largest random shift of a training image (see ``fit``). The test
    set is evaluated about ``epochs`` times, however many epochs the run takes. History
    columns: ``fraction, train_shift, seed`` and those of ``fit``.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    seed_everything(seed)
    # channels_last is the faster convolution layout on CPU and on CUDA alike.
    model = build_model(config).to(device=device, memory_format=torch.channels_last)
    keep = fraction_subset(data.y_train, fraction)
    x_train = to_device(to_float(data.x_train[keep]), device)
    x_test = to_device(to_float(data.x_test), device)
    y_train = to_device(torch.as_tensor(data.y_train[keep]), device)
    y_test = to_device(torch.as_tensor(data.y_test), device)
    generator = torch.Generator().manual_seed(seed)
    run_epochs = matched_epochs(epochs, len(data.y_train), len(keep), batch_size)
    history = fit(model, x_train, y_train, x_test, y_test, epochs=run_epochs,
                  batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                  train_shift=train_shift, eval_every=max(1, run_epochs // epochs),
                  generator=generator, progress=progress,
                  desc=f"{config.head} fraction {fraction:g} shift {train_shift} seed {seed}")
    history.insert(0, "seed", seed)
    history.insert(0, "train_shift", train_shift)
    history.insert(0, "fraction", fraction)
    return model.eval(), history


def to_device(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy to ``device``; images (4-d) in channels_last. On CUDA the copy goes through pinned
    memory without blocking the host."""
    layout = torch.channels_last if tensor.dim() == 4 else torch.contiguous_format
    if device.type == "cuda":
        tensor = tensor.pin_memory()
    return tensor.to(device, memory_format=layout, non_blocking=device.type == "cuda")


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
