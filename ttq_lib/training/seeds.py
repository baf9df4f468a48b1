"""Seeding the global generators per epoch and per process (what dropout and DataLoader workers draw from)."""
from __future__ import annotations

import torch

from ..data.batches import derived_seed


def seed_epoch(seed: int, epoch: int, rank: int = 0) -> None:
    """Seed the global generators (CPU and CUDA) for one epoch of one process.

    What draws from them during training: dropout (AlexNet) and each DataLoader's worker seeds. Seeding per
    epoch makes those draws a function of (seed, epoch, rank), so a resumed run repeats an uninterrupted one's
    masks; per rank, so that N processes do not all drop the same units of their shares of a batch. The data
    order and augmentation have generators of their own (see ``ttq_lib.data.batches``)."""
    torch.manual_seed(derived_seed("epoch-rng", seed, epoch, rank))
