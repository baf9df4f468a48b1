"""CIFAR-10 in memory: the class names, the uint8 tensor container, its statistics, and a synthetic stand-in.

:class:`CifarTensors` holds both splits as uint8 ``[N, 3, 32, 32]`` images and int64 labels; where they come
from is :mod:`ttq_lib.data.sources`, how they become training batches is :mod:`ttq_lib.data.batches`.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch

from .inputs import JPEG_COPY_TEST_SHA256, KNOWN_TEST_SPLITS  # noqa: F401  (re-exported)

CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
SPLITS = ("train", "test")
#: The seed of :meth:`CifarTensors.holdout`: fixed, and independent of any run's seed, so that every run of a
#: learning-rate search holds out (and is evaluated on) the same training images.
HOLDOUT_SEED = 2017


@dataclass
class CifarTensors:
    """CIFAR-10 as tensors: images uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]`` (indices into CLASSES).

    ``source`` says where the data came from; ``cache_path`` is the cache file it was read from or
    written to (None when nothing was cached, e.g. for the synthetic set).  ``name`` says which data set it
    is (:func:`identify`: "CIFAR-10 (JPEG copy)", "CIFAR-10", "synthetic", ...), ``test_sha256`` hashes
    the full test split it was loaded with, and ``origin`` is where the source was found
    (:func:`ttq_lib.data.inputs.input_origin`); subsets and holdouts keep all three.
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    cache_path: str | None = None
    name: str = ""
    test_sha256: str = ""
    origin: str = ""

    def __post_init__(self) -> None:
        for split in SPLITS:
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            check_images(x, f"{split}_x")
            if y.dtype != torch.int64 or y.ndim != 1 or len(y) != len(x):
                raise ValueError(
                    f"{split}_y must be int64 of shape [{len(x)}] to match {split}_x, "
                    f"got {y.dtype} {tuple(y.shape)}"
                )

    def __repr__(self) -> str:
        # The default dataclass repr would print 180 MB of pixels.
        return (
            f"CifarTensors(train={len(self.train_y)}, test={len(self.test_y)}, "
            f"source={self.source!r}, cache_path={self.cache_path!r})"
        )

    def subset(self, n_train: int | None, n_test: int | None, seed: int = 0) -> "CifarTensors":
        """A smaller copy with ``n_train`` / ``n_test`` images (None keeps a split whole).

        The pick is stratified: classes are taken round-robin in a seeded random order, so every
        class gets ``n // 10`` or one more image when there are enough, and the same seed gives the
        same images.  Kept images stay in their original order.
        """
        train = _stratified_indices(self.train_y, n_train, seed, "n_train")
        test = _stratified_indices(self.test_y, n_test, seed + 1, "n_test")
        return CifarTensors(
            self.train_x[train].clone(), self.train_y[train].clone(),
            self.test_x[test].clone(), self.test_y[test].clone(),
            source=f"{self.source} (subset {len(train)}/{len(test)}, seed {seed})",
            cache_path=self.cache_path, name=self.name, test_sha256=self.test_sha256, origin=self.origin,
        )

    def holdout(self, n: int, seed: int = HOLDOUT_SEED) -> "CifarTensors":
        """Hold out ``n`` training images: a copy whose training split is the rest and whose "test" split is
        the ``n`` held-out images; the real test split is dropped, so nothing evaluated on the copy sees it.

        The pick is stratified as in :meth:`subset` and depends only on the labels, ``n`` and ``seed`` (by
        default :data:`HOLDOUT_SEED`, not a run's seed), so runs that differ only in their seed or learning
        rate are all evaluated on the same images.  Both parts keep their original order.
        """
        total = len(self.train_y)
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n < total:
            raise ValueError(f"--holdout {n} is out of range: the training split has {total} images; hold out "
                             f"between 1 and {total - 1} of them (e.g. {max(1, total // 10)}) and train on the rest")
        held = _stratified_indices(self.train_y, n, seed, "holdout")
        rest = torch.ones(total, dtype=torch.bool)
        rest[held] = False
        return CifarTensors(
            self.train_x[rest].clone(), self.train_y[rest].clone(),
            self.train_x[held].clone(), self.train_y[held].clone(),
            source=f"{self.source} (holdout {n} of {total} training images, seed {seed}; test split unused)",
            cache_path=self.cache_path, name=self.name, test_sha256=self.test_sha256, origin=self.origin,
        )


def _stratified_indices(y: torch.Tensor, n: int | None, seed: int, what: str) -> torch.Tensor:
    if n is None:
        return torch.arange(len(y))
    if not 0 <= n <= len(y):
        raise ValueError(f"{what}={n} is out of range: this split has {len(y)} images (use 0..{len(y)} or None)")
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(y), generator=g)
    labels = y[perm]
    # Rank of each image within its class in the shuffled order; sorting by rank interleaves classes.
    rank = torch.empty(len(y), dtype=torch.int64)
    for c in labels.unique():
        members = (labels == c).nonzero().flatten()
        rank[members] = torch.arange(len(members))
    order = torch.argsort(rank * len(y) + torch.arange(len(y)))
    return perm[order[:n]].sort().values


def check_images(x: torch.Tensor, name: str) -> None:
    """Raise a ValueError unless ``x`` is a uint8 image batch ``[N, 3, H, W]``."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a uint8 tensor of shape [N, 3, H, W], got {got}")


def channel_mean_std(x: torch.Tensor, chunk: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale (float64, chunked to save memory)."""
    check_images(x, "x")
    s = torch.zeros(3, dtype=torch.float64)
    s2 = torch.zeros(3, dtype=torch.float64)
    for i in range(0, len(x), chunk):
        part = x[i:i + chunk].to(torch.float64) / 255.0
        s += part.sum(dim=(0, 2, 3))
        s2 += (part * part).sum(dim=(0, 2, 3))
    count = x.shape[0] * x.shape[2] * x.shape[3]
    mean = s / count
    std = (s2 / count - mean * mean).clamp_min(0).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())



def synthetic_cifar10(n_train: int = 2000, n_test: int | None = None, seed: int = 0) -> CifarTensors:
    """A deterministic, learnable stand-in for CIFAR-10 (for tests and offline demos).

    Class c is a tinted background plus stripes at angle c * 18 degrees, with a random phase,
    brightness and Gaussian pixel noise per image: colour alone already separates the classes, so a
    small network learns it in a few steps, while the noise keeps it from being trivial.
    """
    n_test = max(10, n_train // 5) if n_test is None else n_test

    def make(n: int, stream: int):
        g = torch.Generator().manual_seed(seed * 7919 + stream)
        y = torch.arange(n) % len(CLASSES)
        y = y[torch.randperm(n, generator=g)]
        palette = torch.tensor([
            [200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200],
            [60, 200, 200], [230, 140, 40], [120, 120, 120], [40, 120, 230], [150, 80, 30],
        ], dtype=torch.float32)
        angle = y.float() * (math.pi / len(CLASSES))
        coords = torch.arange(32, dtype=torch.float32)
        rows, cols = coords.view(1, 32, 1), coords.view(1, 1, 32)
        phase = torch.rand(n, 1, 1, generator=g) * 2 * math.pi
        wave = torch.sin(
            (cols * angle.cos().view(-1, 1, 1) + rows * angle.sin().view(-1, 1, 1)) * (2 * math.pi / 8) + phase
        )
        brightness = (torch.rand(n, 1, 1, 1, generator=g) - 0.5) * 40
        img = palette[y].view(n, 3, 1, 1) * 0.7 + 40 + 35 * wave.unsqueeze(1) + brightness
        img = img + torch.randn(n, 3, 32, 32, generator=g) * 12
        return img.round().clamp(0, 255).to(torch.uint8), y.to(torch.int64)

    tx, ty = make(n_train, 1)
    vx, vy = make(n_test, 2)
    data = CifarTensors(tx, ty, vx, vy, source=f"synthetic:{n_train}")
    return identify(data)


def test_split_sha256(x: torch.Tensor, y: torch.Tensor) -> str:
    """SHA-256 of a test split as stored: uint8 images [N, 3, 32, 32] in order, then int64 labels."""
    h = hashlib.sha256(x.contiguous().numpy().tobytes())
    h.update(y.contiguous().numpy().tobytes())
    return h.hexdigest()


def identify(data: CifarTensors) -> CifarTensors:
    """Fill in ``name`` and ``test_sha256`` of freshly loaded data (whole splits, before any subset).

    A known test split is named by its hash; the pickled batches are the form the original CIFAR-10 is
    published in, so they are "CIFAR-10"; any other copy is named by its hash, so that runs on different data
    are never averaged together."""
    data.test_sha256 = test_split_sha256(data.test_x, data.test_y)
    if data.source.startswith("synthetic"):
        data.name = "synthetic"
    elif data.test_sha256 in KNOWN_TEST_SPLITS:
        data.name = KNOWN_TEST_SPLITS[data.test_sha256]
    elif data.source.startswith(("batches:", "download:")):
        data.name = "CIFAR-10"
    else:
        data.name = f"CIFAR-10 (copy {data.test_sha256[:8]})"
    return data

