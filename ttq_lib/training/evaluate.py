"""Running a model on uint8 CIFAR images: test accuracy, logits, and the time of a forward pass."""
from __future__ import annotations

import statistics
import time

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import normalize


@torch.no_grad()
def accuracy(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, mean, std,
             batch_size: int = 500, device: str | torch.device | None = None, progress: bool = False) -> float:
    """Top-1 accuracy in percent; images are normalised with the checkpoint's own mean and std.

    The count of correct answers stays on the device and is read back once, at the end: a read per batch
    would make the host wait for the GPU after every batch."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    y = y.to(device, non_blocking=True)
    correct = torch.zeros((), dtype=torch.int64, device=device)
    starts = range(0, len(x_uint8), batch_size)
    for i in tqdm(starts, desc="eval", leave=False, disable=not progress):
        xb = normalize(x_uint8[i:i + batch_size].to(device, non_blocking=True), mean, std)
        correct += (model(xb).argmax(1) == y[i:i + batch_size]).sum()
    model.train(was_training)
    return 100.0 * int(correct) / len(x_uint8)


@torch.no_grad()
def predict_logits(model: nn.Module, x_uint8: torch.Tensor, mean, std, batch_size: int = 500) -> torch.Tensor:
    """Logits of ``model`` (eval mode) on uint8 images normalised with the checkpoint's mean and std."""
    was_training = model.training
    model.eval()
    out = [model(normalize(x_uint8[i:i + batch_size], mean, std)) for i in range(0, len(x_uint8), batch_size)]
    model.train(was_training)
    return torch.cat(out)


@torch.no_grad()
def time_forward(model: nn.Module, x: torch.Tensor, repeats: int = 5, warmup: int = 1) -> float:
    """Median wall time in seconds of ``model(x)`` in eval mode over ``repeats`` runs (after ``warmup``)."""
    was_training = model.training
    model.eval()
    for _ in range(warmup):
        model(x)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - t0)
    model.train(was_training)
    return statistics.median(times)
