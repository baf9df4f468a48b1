"""From uint8 tensors to training batches: batched random crop and flip, normalisation, seeded order.

Batch preparation is a few tensor ops on the whole batch, on the training device, so the model step and not
the data pipeline sets the pace; every epoch's order and augmentation are a pure function of (seed, epoch),
which is what makes a resumed run bit-identical to an uninterrupted one.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F

from ..models import IMAGENET_MEAN, IMAGENET_STD
from .cifar10 import check_images


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded image plus random horizontal flip (p = 0.5), batched.

    Same distribution as torchvision's ``RandomCrop(32, padding=pad)`` + ``RandomHorizontalFlip()``,
    done for the whole batch with one gather instead of a loop over images.  The random offsets and
    flips are drawn from ``generator`` on its own device and then moved to ``x``'s device, so a CPU
    generator gives the same augmentation for CPU and CUDA batches.
    """
    check_images(x, "x")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b = x.shape[0]
    dev = generator.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
    flip = torch.randint(0, 2, (b,), generator=generator, device=dev)
    if dev != x.device:  # one copy of all three instead of three, and asynchronous: see to_device
        oy, ox, flip = to_device(torch.stack((oy, ox, flip)), x.device)
    return crop_flip(x, oy, ox, flip.to(torch.bool), pad)


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``t`` on ``device``; from the CPU to CUDA through pinned memory, with ``non_blocking``.

    A copy from ordinary (pageable) memory makes the host wait until the GPU has finished the work queued
    before it -- a synchronisation every batch; from pinned memory the copy is queued like a kernel.  The
    caching host allocator keeps the pinned block alive until the copy is done.
    """
    if t.device.type == "cpu" and torch.device(device).type == "cuda":
        t = t.pin_memory()
    return t.to(device, non_blocking=True)


def crop_flip(x: torch.Tensor, oy: torch.Tensor, ox: torch.Tensor, flip: torch.Tensor, pad: int) -> torch.Tensor:
    """Crop image i at offset (oy[i], ox[i]) of its ``pad``-padded version, mirrored where flip[i].

    Output pixel (r, c) of image i is padded pixel (oy + r, ox + c), or (oy + r, ox + W-1-c) when
    flipped: crop first, then mirror the crop, as torchvision's transforms do.
    """
    b, ch, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad)) if pad else x
    pw = w + 2 * pad
    r = torch.arange(h, device=x.device)
    c = torch.arange(w, device=x.device)
    cols = torch.where(flip.view(b, 1), (w - 1 - c).view(1, w), c.view(1, w)) + ox.view(b, 1)
    rows = r.view(1, h) + oy.view(b, 1)
    index = (rows.view(b, h, 1) * pw + cols.view(b, 1, w)).view(b, 1, h * w).expand(b, ch, h * w)
    return padded.reshape(b, ch, -1).gather(2, index).view(b, ch, h, w)


def normalize(
    x: torch.Tensor, mean: Sequence[float] | torch.Tensor, std: Sequence[float] | torch.Tensor
) -> torch.Tensor:
    """uint8 images -> float32 ``(x / 255 - mean) / std``, per channel, on x's device."""
    if x.dtype != torch.uint8:
        raise ValueError(f"normalize expects uint8 images, got {x.dtype}")
    m = torch.as_tensor(mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
    return x.to(torch.float32).div_(255.0).sub_(m).div_(s)


def derived_seed(*parts) -> int:
    """A 63-bit seed that depends only on ``parts``: independent streams without shared state."""
    digest = hashlib.sha256(":".join(map(str, ("ttq", *parts))).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


class Batches:
    """Mini-batches ``(x float32 normalised [B, 3, 32, 32], y int64 [B])`` on ``device``.

    Epoch e's order and augmentation depend only on ``(seed, e)`` -- not on how many batches were
    drawn before -- so a killed run resumes exactly by calling ``set_epoch(e)`` (or
    ``set_epoch(e, start_batch=k)`` mid-epoch).  As with DistributedSampler, iterating does not
    advance the epoch: call ``set_epoch`` before each epoch, or every epoch repeats epoch 0.

    ``preload`` (default: when ``device`` is CUDA) copies the whole uint8 set to the device once
    (150 MB for CIFAR-10), so batches are sliced there; otherwise each uint8 batch is moved just
    before augmentation and normalisation, which then run on the device.  Every copy to a GPU is
    non-blocking (:func:`to_device`), so drawing batches never waits for the training step before it.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int = 128,
        shuffle: bool = True,
        augment: bool = False,
        mean: Sequence[float] = IMAGENET_MEAN,
        std: Sequence[float] = IMAGENET_STD,
        seed: int = 0,
        device: str | torch.device = "cpu",
        drop_last: bool = False,
        pad: int = 4,
        preload: bool | None = None,
    ):
        check_images(x, "x")
        if not isinstance(y, torch.Tensor) or y.ndim != 1 or len(y) != len(x):
            got = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise ValueError(f"y must be a 1-D tensor with one label per image ({len(x)}), got {got}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch.device(device)
        if preload is None:
            preload = self.device.type == "cuda"
        self._x = x.to(self.device) if preload else x
        self._y = y.to(torch.int64).to(self.device) if preload else y.to(torch.int64)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.augment = augment
        self.pad = pad
        self.seed = seed
        self.drop_last = drop_last
        self.mean = torch.as_tensor(mean, dtype=torch.float32, device=self.device)
        self.std = torch.as_tensor(std, dtype=torch.float32, device=self.device)
        self.epoch = 0
        self.start_batch = 0

    def __len__(self) -> int:
        n = len(self._y)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """Select epoch ``epoch``'s order and augmentation; skip its first ``start_batch`` batches."""
        if not 0 <= start_batch <= len(self):
            raise ValueError(f"start_batch must be in 0..{len(self)}, got {start_batch}")
        self.epoch = int(epoch)
        self.start_batch = int(start_batch)

    def order(self) -> torch.Tensor:
        """The image indices of the current epoch, in batch order (before drop_last)."""
        n = len(self._y)
        if not self.shuffle:
            return torch.arange(n)
        g = torch.Generator().manual_seed(derived_seed("perm", self.seed, self.epoch))
        return torch.randperm(n, generator=g)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = to_device(self.order(), self._x.device)
        for b in range(self.start_batch, len(self)):
            # Only the batch preparation runs single-threaded; the caller's model step keeps its threads.
            with _one_cpu_thread(self.device.type == "cpu"):
                batch = self._make_batch(order, b)
            yield batch

    def _make_batch(self, order: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        xb = to_device(self._x[idx], self.device)
        yb = to_device(self._y[idx], self.device)
        if self.augment:
            # A fresh generator per batch keeps batch b's augmentation independent of batches < b.
            g = torch.Generator().manual_seed(derived_seed("augment", self.seed, self.epoch, b))
            xb = augment(xb, g, self.pad)
        return normalize(xb, self.mean, self.std), yb


@contextlib.contextmanager
def _one_cpu_thread(active: bool = True):
    """Run the enclosed CPU tensor ops on one thread.

    A batch of 128 CIFAR images is only ~0.4 M elements: one thread does each op in well under a
    millisecond, while several OpenMP threads on a busy machine (another training run, DataLoader
    workers) were measured 50-100x slower, waiting for each other at every op's barrier.
    """
    n = torch.get_num_threads()
    if not active or n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)
