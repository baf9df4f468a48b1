"""Which device a run trains on, and its label in history rows (so epoch times of different machines stay apart)."""
from __future__ import annotations

import torch


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    """The device as each history row records it ("cpu", "cuda:NVIDIA H100 80GB HBM3"): a run resumed on
    another machine keeps the epoch times of each apart, and the plan runner estimates from this machine's."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type
