"""Test accuracy of a model on uint8 CIFAR images."""
from __future__ import annotations

import torch
import torch.nn as nn
from tqdm.auto import tqdm


@torch.no_grad()
def accuracy(model: nn.Module, x_uint8: torch.Tensor, y: torch.Tensor, mean, std,
             batch_size: int = 500, device: str | torch.device | None = None, progress: bool = False) -> float:
    """Top-1 accuracy in percent; images are normalised with the checkpoint's own mean and std."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    m = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    s = torch.tensor(std, device=device).view(1, 3, 1, 1)
    correct = 0
    starts = range(0, len(x_uint8), batch_size)
    for i in tqdm(starts, desc="eval", leave=False, disable=not progress):
        xb = (x_uint8[i:i + batch_size].to(device).float() / 255 - m) / s
        correct += int((model(xb).argmax(1).cpu() == y[i:i + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / len(x_uint8)
