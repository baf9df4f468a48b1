"""Small ImageNet-style folders for tests/test_imagenet.py and tests/test_distributed.py (no test here)."""
from __future__ import annotations

import tarfile
from pathlib import Path

import torch
from PIL import Image


def synthetic_folder(root: Path, classes=("cat", "dog", "emu"), train_per_class=8, val_per_class=3,
                     seed=0) -> Path:
    """Random images of varied sizes (40-72 px a side), one dominant colour channel per class."""
    g = torch.Generator().manual_seed(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for c, name in enumerate(classes):
            (root / split / name).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                h, w = (int(v) for v in torch.randint(40, 73, (2,), generator=g))
                img = torch.randint(0, 120, (h, w, 3), generator=g, dtype=torch.uint8)
                img[..., c % 3] += 120
                Image.fromarray(img.numpy()).save(root / split / name / f"{name}_{i:03d}.JPEG", quality=90)
    return root


def cifar_folder(tgz: Path, root: Path, classes=("airplane", "cat", "ship"), train_per_class=8,
                 val_per_class=4, size=64) -> Path:
    """Real CIFAR-10 JPEGs of a few classes from the shared tarball, upscaled to ``size`` px (bicubic):
    its train/ images become train/, its test/ images val/."""
    wanted = {}
    for split, src, n in (("train", "train", train_per_class), ("val", "test", val_per_class)):
        for name in classes:
            for i in range(n):
                wanted[f"{src}/{name}/{i:04d}.jpg"] = root / split / name / f"{name}_{i:04d}.JPEG"
    with tarfile.open(tgz) as tar:
        for member in tar:
            dst = wanted.pop(member.name.removeprefix("./"), None)
            if dst is None:
                continue
            dst.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as f:
                Image.open(f).convert("RGB").resize((size, size), Image.BICUBIC).save(dst, quality=95)
            if not wanted:
                break
    if wanted:
        raise FileNotFoundError(f"{tgz} lacks {sorted(wanted)[:3]}")
    return root
