"""ImageNet-style image folders: ``train/<class>/*.JPEG`` and ``val/<class>/*.JPEG``, served to many processes.

What is decided here, and why:

- Layout.  Classes are the sub-folders of ``train/``, sorted (torchvision's ImageFolder order, so label i is
  the i-th folder name); ``val/`` must hold the same class folders.  ILSVRC's own val images come flat, in one
  folder: sort them into class folders first (the usual ``valprep.sh``).
- Augmentation (the standard ImageNet recipe): training takes a random crop of 8-100 % of the image area with
  aspect ratio 3/4-4/3, resized to ``size`` (224), and a horizontal flip with probability 1/2; evaluation
  resizes the shorter side to ``resize`` (256) and takes the centre ``size`` crop.
- Determinism.  Image i's crop and flip in epoch e come from a generator seeded by (seed, e, i) only, and the
  order of epoch e from (seed, e): whichever process or worker decodes an image, and however many processes
  share the work, the images of every global batch and their augmentation are the same.  That is what makes
  N processes train exactly as one does (tests/test_distributed.py) and a resumed run repeat an epoch exactly.
- A corrupt image (an undecodable file) is skipped with a warning naming it, and its batch is one image short;
  training does not stop for one bad file among a million.  A folder without any image is an error.
- Decoding runs in DataLoader worker processes (``decode="cpu"``), or the workers only read the bytes and the
  main process decodes whole batches on the GPU with nvJPEG (``decode="device"``, :func:`decode_batch`).
"""
from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .batches import derived_seed
from .sources import DataSourceError

#: Files taken as images (case-insensitive); ImageNet's are ``.JPEG``.
IMAGE_SUFFIXES = (".jpeg", ".jpg", ".png")
SPLITS = ("train", "val")


@dataclass
class ImageSplit:
    """One split: image paths and their class indices, in a fixed (sorted) order."""
    files: list[Path]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.files)


@dataclass
class ImageFolderData:
    """An image-folder tree: its classes and its two splits."""
    root: Path
    classes: list[str]
    train: ImageSplit
    val: ImageSplit


def _class_dirs(split_dir: Path) -> list[str]:
    return sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def _scan_split(split_dir: Path, classes: list[str]) -> ImageSplit:
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(p for p in (split_dir / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        files += found
        labels += [label] * len(found)
    if not files:
        raise DataSourceError(f"{split_dir} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class folders")
    return ImageSplit(files, labels)


def scan_image_folder(root: str | Path, need_train: bool = True) -> ImageFolderData:
    """Read the layout of ``root`` (``train/<class>/*``, ``val/<class>/*``); clear errors for what is wrong.

    ``need_train=False`` (evaluation): a tree with ``val/`` alone will do; its class folders then give the
    labels, and ``train/``, if present, must still hold the same classes."""
    root = Path(root)
    layout = "expected ROOT/train/<class>/*.JPEG and ROOT/val/<class>/*.JPEG"
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root} is not a folder: {layout}")
    for split in SPLITS if need_train else ("val",):
        if not (root / split).is_dir():
            extra = (" (ILSVRC's val images come in one flat folder: sort them into class folders first)"
                     if split == "val" else "")
            raise DataSourceError(f"{root} has no {split}/ folder: {layout}{extra}")
    has_train = (root / "train").is_dir()
    classes = _class_dirs(root / ("train" if has_train else "val"))
    if not classes:
        raise DataSourceError(f"{root / ('train' if has_train else 'val')} has no class folders: {layout}")
    val_classes = _class_dirs(root / "val")
    if val_classes != classes:
        only_train = sorted(set(classes) - set(val_classes))
        only_val = sorted(set(val_classes) - set(classes))
        raise DataSourceError(f"{root}: train/ and val/ hold different classes (only in train: {only_train[:5]}"
                              f"{' ...' if len(only_train) > 5 else ''}; only in val: {only_val[:5]}"
                              f"{' ...' if len(only_val) > 5 else ''}): labels would not match; give both splits "
                              "the same class folders")
    train = _scan_split(root / "train", classes) if need_train else ImageSplit([], [])
    return ImageFolderData(root, classes, train, _scan_split(root / "val", classes))


def random_resized_crop_box(height: int, width: int, g: torch.Generator, scale=(0.08, 1.0),
                            ratio=(3 / 4, 4 / 3)) -> tuple[int, int, int, int]:
    """(top, left, h, w) of a random crop: area ``scale`` of the image, aspect ratio ``ratio`` (log-uniform);
    after 10 failed draws the largest centred crop within ``ratio`` (the usual rule)."""
    area = height * width
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        u = torch.rand(3, generator=g, dtype=torch.float64).tolist()
        target = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_lo + (log_hi - log_lo) * u[1])
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=g))
            left = int(torch.randint(0, width - w + 1, (1,), generator=g))
            return top, left, h, w
    aspect = width / height
    if aspect < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif aspect > ratio[1]:
        h, w = height, round(height * ratio[1])
    else:
        h, w = height, width
    return (height - h) // 2, (width - w) // 2, h, w


def train_transform(img: torch.Tensor, size: int, g: torch.Generator) -> torch.Tensor:
    """Random resized crop to ``size`` x ``size`` and a random horizontal flip of a uint8 [3, H, W] image."""
    from torchvision.transforms.v2 import functional as TF

    top, left, h, w = random_resized_crop_box(img.shape[-2], img.shape[-1], g)
    out = TF.resized_crop(img, top, left, h, w, [size, size], antialias=True)
    if torch.rand(1, generator=g).item() < 0.5:
        out = out.flip(-1)
    return out


def eval_transform(img: torch.Tensor, size: int, resize: int) -> torch.Tensor:
    """Shorter side to ``resize``, then the centre ``size`` x ``size`` crop (256 -> 224 for ImageNet)."""
    from torchvision.transforms.v2 import functional as TF

    return TF.center_crop(TF.resize(img, [resize], antialias=True), [size, size])


def decode_file(data: bytes | torch.Tensor) -> torch.Tensor:
    """Bytes of a JPEG / PNG (grey, CMYK and RGBA included) -> uint8 RGB [3, H, W] on the CPU, with Pillow
    (torchvision 0.29 deprecates its own CPU decoders).  ``RuntimeError`` when it is no decodable image."""
    import numpy as np
    from PIL import Image

    if isinstance(data, torch.Tensor):
        data = data.numpy().tobytes()
    try:
        with Image.open(io.BytesIO(data)) as img:
            rgb = np.asarray(img.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise RuntimeError(f"{type(e).__name__}: {e}") from None
    return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def decode_batch(raw: list[torch.Tensor], device: torch.device | str) -> list[torch.Tensor | None]:
    """Decode a batch of JPEG bytes on ``device`` (nvJPEG on CUDA, in one batched call), uint8 RGB each.

    A file the batched call cannot take (a PNG named .JPEG, a CMYK JPEG: ImageNet has a few) is decoded on the
    CPU and moved to ``device``; a file nothing decodes gives ``None`` (the caller skips it, naming it)."""
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        with warnings.catch_warnings():  # deprecated in torchvision 0.29 in favour of TorchCodec, not a dependency
            warnings.simplefilter("ignore", DeprecationWarning)
            return list(decode_jpeg(raw, mode=ImageReadMode.RGB, device=device))
    except RuntimeError:
        out = []
        for r in raw:
            try:
                out.append(decode_file(r).to(device))
            except RuntimeError:
                out.append(None)
        return out


class ImageFolderDataset(torch.utils.data.Dataset):
    """Items of one split, keyed by ``(index, epoch)`` (see :class:`ShardedBatchSampler`).

    ``train``: augmented, else the evaluation crop.  ``decode="cpu"`` returns ``(uint8 [3, size, size], label)``;
    ``decode="device"`` returns ``(raw bytes, label, seed)`` for :func:`decode_batch` in the main process.
    An undecodable file gives ``None`` (dropped by :func:`collate`) and a warning naming it."""

    def __init__(self, split: ImageSplit, train: bool, size: int = 224, resize: int = 256, seed: int = 0,
                 decode: str = "cpu"):
        self.split, self.train, self.size, self.resize, self.seed, self.decode = split, train, size, resize, seed, decode

    def __len__(self) -> int:
        return len(self.split)

    def generator(self, index: int, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(derived_seed("imagefolder", self.seed, epoch, index))

    def transform(self, img: torch.Tensor, index: int, epoch: int) -> torch.Tensor:
        if self.train:
            return train_transform(img, self.size, self.generator(index, epoch))
        return eval_transform(img, self.size, self.resize)

    def __getitem__(self, key):
        index, epoch = key
        path, label = self.split.files[index], self.split.labels[index]
        data = path.read_bytes()
        if self.decode != "cpu":
            return torch.frombuffer(bytearray(data), dtype=torch.uint8), label, index, epoch
        try:
            img = decode_file(data)
        except RuntimeError as e:
            warnings.warn(f"skipping {path}: it cannot be decoded as an image ({e}); delete or replace it",
                          stacklevel=2)
            return None
        return self.transform(img, index, epoch), label


def collate(items: list) -> tuple:
    """Stack decoded items (dropping skipped ones) into (uint8 [B, 3, S, S], int64 [B]); raw items stay lists."""
    items = [it for it in items if it is not None]
    if not items:
        return torch.zeros(0, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64)
    if len(items[0]) == 2:
        return torch.stack([it[0] for it in items]), torch.tensor([it[1] for it in items], dtype=torch.int64)
    return [it[0] for it in items], torch.tensor([it[1] for it in items]), [(it[2], it[3]) for it in items]


class ShardedBatchSampler:
    """Per-process batches of (index, epoch) keys: the global order and batches do not depend on the process count.

    Epoch e's order is a permutation seeded by (seed, e) (``shuffle``) or 0..n-1; it is cut into global batches
    of ``global_batch`` images (training drops the last, partial one: every step has the recipe's batch), and
    process ``rank`` of ``world`` takes the rank-th contiguous ``global_batch / world`` of each.  So the
    processes' batches of a step, concatenated in rank order, are exactly the batch one process would take.
    Evaluation (``drop_last=False``) keeps every image: the last batch is split as evenly as it goes.
    """

    def __init__(self, n: int, global_batch: int, rank: int = 0, world: int = 1, seed: int = 0,
                 shuffle: bool = True, drop_last: bool = True):
        if global_batch % world:
            raise ValueError(f"the global batch {global_batch} does not divide among {world} processes: choose "
                             f"a --batch-size that is a multiple of {world} (the batch is global: each process "
                             f"takes batch/{world})")
        if drop_last and n < global_batch:
            raise ValueError(f"the training split has {n} images, fewer than one batch of {global_batch}: lower "
                             "--batch-size or add images")
        self.n, self.global_batch, self.rank, self.world = n, global_batch, rank, world
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.epoch, self.start_step = 0, 0

    def set_epoch(self, epoch: int, start_step: int = 0) -> None:
        self.epoch, self.start_step = epoch, start_step

    def __len__(self) -> int:
        return self.n // self.global_batch if self.drop_last else math.ceil(self.n / self.global_batch)

    def order(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(derived_seed("order", self.seed, self.epoch))
        return torch.randperm(self.n, generator=g).tolist()

    def __iter__(self):
        order, b = self.order(), self.global_batch
        for step in range(self.start_step, len(self)):
            batch = order[step * b:(step + 1) * b]
            lo, hi = (self.rank * len(batch)) // self.world, ((self.rank + 1) * len(batch)) // self.world
            yield [(i, self.epoch) for i in batch[lo:hi]]
