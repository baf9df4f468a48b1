"""CIFAR-10 as in-memory uint8 tensors, with batched tensor augmentation.

Sources understood by :func:`load_cifar10` (see its docstring for the details):

* ``None`` / ``"download"``: torchvision's download of the original set into ``root`` (``data/``);
  ``$TTQ_DATA``, when set, takes the place of ``None``.
* a ``cifar-10-batches-py`` directory (the pickled batches), or a directory that contains one;
* an image-folder tree ``train/<class>/*.png|jpg`` + ``test/<class>/...``, optionally under one
  top-level folder;
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` of such a tree (or of ``cifar-10-batches-py``), read member by
  member straight from the archive, without extracting it;
* ``"synthetic"`` / ``"synthetic:N"``: a small, deterministic, learnable stand-in for tests.

Decoding 60,000 JPEGs takes seconds, not minutes, but it is still done once: the tensors are cached
as one safetensors file (see :func:`load_cifar10` for where and how it is keyed).  Training then never
touches Pillow: :class:`Batches` slices the uint8 tensors, moves the batch to the device and does the
random crop + flip there as a few batched tensor ops (:func:`augment`).
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import math
import os
import pickle
import re
import stat
import tarfile
import warnings
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .atomic import atomic_path

log = logging.getLogger(__name__)

CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)
# The pretrained full-precision checkpoints were trained with ImageNet statistics, so fine-tuning
# them must normalise the same way; CIFAR10_* are the original training set's own statistics.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)

ENV_DATA = "TTQ_DATA"
# Bump when decoding changes what ends up in the tensors, so that old caches are not reused.
CACHE_FORMAT = 1
SPLITS = ("train", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)
BATCHES_DIR = "cifar-10-batches-py"
_CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

ACCEPTED_FORMS = (
    "a cifar-10-batches-py directory (or a directory containing one); "
    "an image-folder tree train/<class>/*.png|jpg and test/<class>/... (CIFAR-10 class names); "
    "a .tar.gz, .tgz or .tar of such a tree; 'synthetic' or 'synthetic:N'; "
    "or 'download' for torchvision's download"
)
HOW_TO_POINT = (
    "Point at a local copy instead: pass --data PATH on the command line, "
    f"load_cifar10(source=PATH) in Python, or set the environment variable {ENV_DATA}=PATH, "
    f"where PATH is {ACCEPTED_FORMS}. Offline, the workbook's own copy is the tarball "
    "cifar10-jpeg.tar.gz in the shared data folder (see data/README.md)."
)


class DataSourceError(RuntimeError):
    """The data source exists but cannot be used: no download, a wrong layout or corrupt files."""


# --------------------------------------------------------------------------------------------
# The container
# --------------------------------------------------------------------------------------------


@dataclass
class CifarTensors:
    """CIFAR-10 as tensors: images uint8 ``[N, 3, 32, 32]``, labels int64 ``[N]`` (indices into CLASSES).

    ``source`` says where the data came from; ``cache_path`` is the cache file it was read from or
    written to (None when nothing was cached, e.g. for the synthetic set).
    """

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    source: str
    cache_path: str | None = None

    def __post_init__(self) -> None:
        for split in SPLITS:
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            _check_images(x, f"{split}_x")
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
            cache_path=self.cache_path,
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


def _check_images(x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a uint8 tensor of shape [N, 3, H, W], got {got}")


def channel_mean_std(x: torch.Tensor, chunk: int = 10000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images on the [0, 1] scale (float64, chunked to save memory)."""
    _check_images(x, "x")
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


# --------------------------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------------------------


def load_cifar10(
    source: str | os.PathLike | None = None,
    root: str | os.PathLike = "data",
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> CifarTensors:
    """Load CIFAR-10 into uint8 tensors, decoding at most once per source thanks to a disk cache.

    ``source``:

    * ``None``: ``$TTQ_DATA`` if set, else ``"download"``.
    * ``"download"``: use ``root/cifar-10-batches-py`` if it is there, else download the original
      set with torchvision into ``root`` (only if ``download``).  Failing that (no internet),
      :class:`DataSourceError` explains how to point at a local copy.
    * a path: a ``cifar-10-batches-py`` directory or a directory containing one; an image-folder tree
      ``train/<class>/*`` + ``test/<class>/*`` (PNG or JPEG, 32x32, CIFAR-10 class names, possibly
      under one top-level folder); or a ``.tar.gz`` / ``.tgz`` / ``.tar`` of either, read in place.
    * ``"synthetic"`` or ``"synthetic:N"``: N (default 2000) generated training images and max(10, N // 5)
      test images; deterministic and never cached.

    Cache: one ``<source name>.ttq-cache-<key>.safetensors`` file.  The key is a hash of the file
    contents for a tarball (so a copy of the same tarball shares the cache) and of each file's
    path, size and modification time for a directory.  It is looked for and written in, in order:
    ``cache_dir`` if given; beside the source (for a download: in ``root``); ``data/cache`` in
    the repository this package lives in; ``~/.cache/ttq-workbook``.  A folder without write
    permission bits counts as read-only even for root (the shared data folder is meant to stay
    untouched).  The file is written atomically; a corrupt or mismatching one is ignored and
    rebuilt, and stale caches of the same source in that folder are removed.

    Raises FileNotFoundError for a path that does not exist, DataSourceError for one that cannot be
    read as CIFAR-10, ValueError for a malformed source string.
    """
    if source is None:
        source = os.environ.get(ENV_DATA) or "download"
    if isinstance(source, str):
        text = source.strip()
        if text == "download":
            return _load_download(Path(root), cache_dir, download, progress)
        if text == "synthetic" or text.startswith("synthetic:"):
            return synthetic_cifar10(_parse_synthetic(text))
        source = text
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"CIFAR-10 source {str(path)!r} does not exist. Accepted: {ACCEPTED_FORMS}."
        )
    return _load_path(path, cache_dir, progress)


def _parse_synthetic(text: str) -> int:
    if text == "synthetic":
        return 2000
    arg = text.split(":", 1)[1]
    if not arg.isdigit() or int(arg) < 10:
        raise ValueError(f"bad source {text!r}: write 'synthetic' or 'synthetic:N' with an integer N >= 10")
    return int(arg)


def _load_download(root: Path, cache_dir, download: bool, progress: bool) -> CifarTensors:
    batches = root / BATCHES_DIR
    if not (batches / BATCH_FILES[0]).exists():
        if not download:
            raise DataSourceError(
                f"CIFAR-10 is not in {str(root)!r} (no {BATCHES_DIR} there) and download=False. " + HOW_TO_POINT
            )
        _torchvision_download(root)
    return _load_path(batches, cache_dir, progress, label=f"download:{batches}")


def _torchvision_download(root: Path) -> None:
    import torchvision.datasets

    try:
        root.mkdir(parents=True, exist_ok=True)
        # Only the training split is asked for: both splits come in the same archive.
        torchvision.datasets.CIFAR10(root=str(root), train=True, download=True)
    except Exception as exc:  # URLError, socket errors, torchvision's integrity RuntimeError, ...
        raise DataSourceError(
            f"Could not download CIFAR-10 into {str(root)!r}: {type(exc).__name__}: {exc}. "
            "This machine probably has no internet access. " + HOW_TO_POINT
        ) from exc


def _load_path(path: Path, cache_dir, progress: bool, label: str | None = None) -> CifarTensors:
    kind, base = _classify(path)
    label = label or f"{kind}:{path}"
    key = _cache_key(kind, base)
    name = f"{path.name}.ttq-cache-{key[:16]}.safetensors"
    candidates = _cache_dirs(path, cache_dir)

    for folder in candidates:
        cached = _read_cache(folder / name, key)
        if cached is not None:
            log.info("CIFAR-10 from cache %s", folder / name)
            return CifarTensors(*cached, source=label, cache_path=str(folder / name))

    train_x, train_y, test_x, test_y = _decode_source(kind, base, progress)
    data = CifarTensors(train_x, train_y, test_x, test_y, source=label)
    written = _write_cache(candidates, name, key, data, label)
    data.cache_path = str(written) if written else None
    return data


def _classify(path: Path) -> tuple[str, Path]:
    """Which reader a path needs: ("batches" | "folder" | "tar", the path it reads)."""
    if path.is_file():
        if path.name.lower().endswith(TAR_SUFFIXES):
            return "tar", path
        raise DataSourceError(
            f"{str(path)!r} is a file but not a tarball (.tar.gz, .tgz, .tar). Accepted: {ACCEPTED_FORMS}."
        )
    if (path / BATCH_FILES[0]).is_file():
        return "batches", path
    if (path / BATCHES_DIR).is_dir():
        return "batches", path / BATCHES_DIR
    if any((path / s).is_dir() for s in SPLITS):
        return "folder", path
    # Allow one wrapping folder, as unpacking an archive often leaves.
    children = [c for c in _visible_subdirs(path) if any((c / s).is_dir() for s in SPLITS)]
    if len(children) == 1:
        return "folder", children[0]
    found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
    raise DataSourceError(
        f"Directory {str(path)!r} has none of the expected layouts (it holds: {found}). "
        f"Accepted: {ACCEPTED_FORMS}."
    )


def _visible_subdirs(path: Path) -> list[Path]:
    return sorted(c for c in path.iterdir() if c.is_dir() and not c.name.startswith((".", "__")))


# ----- cache ---------------------------------------------------------------------------------


def _cache_key(kind: str, base: Path) -> str:
    h = hashlib.sha256(f"ttq-cifar10-cache:{CACHE_FORMAT}:{kind}\n".encode())
    if kind == "tar":
        with open(base, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    h.update(str(base.resolve()).encode())
    if kind == "batches":
        files = [base / n for n in BATCH_FILES if (base / n).exists()]
    else:
        files = sorted(p for s in SPLITS if (base / s).is_dir() for p in (base / s).rglob("*") if p.is_file())
    for p in files:
        st = p.stat()
        h.update(f"\n{p.relative_to(base)}\t{st.st_size}\t{st.st_mtime_ns}".encode())
    return h.hexdigest()


def default_cache_dirs() -> list[Path]:
    """Where caches go when neither ``cache_dir`` nor the source's own folder can take them."""
    dirs = []
    repo = Path(__file__).resolve().parent.parent
    if (repo / "pyproject.toml").is_file():  # an editable install / source checkout
        dirs.append(repo / "data" / "cache")
    dirs.append(Path.home() / ".cache" / "ttq-workbook")
    return dirs


def _cache_dirs(path: Path, cache_dir) -> list[Path]:
    dirs = []
    if cache_dir is not None:
        dirs.append(Path(cache_dir).expanduser())
    dirs.append(path.resolve().parent)
    dirs += default_cache_dirs()
    unique = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def _read_cache(file: Path, key: str):
    if not file.is_file():
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
            if meta.get("key") != key:
                raise ValueError("key mismatch")
            t = {k: f.get_tensor(k) for k in ("train_x", "train_y", "test_x", "test_y")}
        for split in SPLITS:
            x, y = t[f"{split}_x"], t[f"{split}_y"]
            if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3 or y.dtype != torch.int64:
                raise ValueError("unexpected dtypes or shapes")
            if len(x) != len(y) or (len(y) and (int(y.min()) < 0 or int(y.max()) >= len(CLASSES))):
                raise ValueError("labels do not match the images")
        return t["train_x"], t["train_y"], t["test_x"], t["test_y"]
    except Exception as exc:  # any damage at all means: decode again
        warnings.warn(f"ignoring unusable CIFAR-10 cache {file} ({type(exc).__name__}: {exc}); rebuilding it")
        return None


def _dir_writable(d: Path) -> bool:
    probe = d
    while not probe.exists():  # the folder may not exist yet: judge by its nearest existing parent
        if probe.parent == probe:
            return False
        probe = probe.parent
    try:
        mode = probe.stat().st_mode
    except OSError:
        return False
    # Root passes os.access everywhere; a folder without any write bit is meant to stay untouched.
    return probe.is_dir() and bool(mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)) and os.access(probe, os.W_OK)


def _write_cache(candidates: list[Path], name: str, key: str, data: CifarTensors, label: str) -> Path | None:
    from safetensors.torch import save_file

    tensors = {
        "train_x": data.train_x.contiguous(), "train_y": data.train_y.contiguous(),
        "test_x": data.test_x.contiguous(), "test_y": data.test_y.contiguous(),
    }
    meta = {"key": key, "source": label, "format": str(CACHE_FORMAT)}
    for folder in candidates:
        if not _dir_writable(folder):
            continue
        target = folder / name
        try:
            with atomic_path(target) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
                os.chmod(tmp, 0o644)  # mkstemp makes it owner-only; others may share the cache
        except OSError as exc:
            log.info("cannot write the CIFAR-10 cache in %s (%s); trying the next folder", folder, exc)
            continue
        _remove_stale(folder, name)
        log.info("CIFAR-10 cache written to %s", target)
        return target
    warnings.warn(f"could not write a CIFAR-10 cache in any of {[str(c) for c in candidates]}; "
                  "the source will be decoded again next time")
    return None


def _remove_stale(folder: Path, name: str) -> None:
    stem = name.split(".ttq-cache-")[0]
    pattern = re.compile(re.escape(stem) + r"\.ttq-cache-[0-9a-f]{16}\.safetensors")
    for other in folder.iterdir():
        if other.name != name and pattern.fullmatch(other.name):
            try:
                other.unlink()
            except OSError:
                pass


# ----- readers -------------------------------------------------------------------------------


def _decode_source(kind: str, base: Path, progress: bool):
    if kind == "batches":
        return _read_batches_dir(base)
    if kind == "folder":
        return _read_image_folder(base, progress)
    return _read_tarball(base, progress)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and dicts only: a pickle can otherwise run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not part of a CIFAR-10 batch")


def _unpickle_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(f"data has shape {data.shape}, {len(labels)} labels; expected [N, 3072] and N")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise ValueError("labels outside 0..9")
    except Exception as exc:
        raise DataSourceError(
            f"{where} is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}). "
            "Re-download it or point at another copy."
        ) from exc
    return data.reshape(-1, 3, 32, 32), labels


def _join_batches(parts: dict[str, tuple[np.ndarray, np.ndarray]], where: str):
    missing = [n for n in BATCH_FILES if n not in parts]
    if missing:
        raise DataSourceError(
            f"{where} lacks {', '.join(missing)}: a cifar-10-batches-py folder needs "
            f"{', '.join(BATCH_FILES)}. Re-download it (delete the folder first) or point at another copy."
        )
    train = [parts[n] for n in BATCH_FILES[:5]]
    tx = torch.from_numpy(np.concatenate([d for d, _ in train]))
    ty = torch.from_numpy(np.concatenate([lab for _, lab in train]))
    vx, vy = parts["test_batch"]
    return tx, ty, torch.from_numpy(vx.copy()), torch.from_numpy(vy.copy())


def _read_batches_dir(base: Path):
    parts = {n: _unpickle_batch((base / n).read_bytes(), str(base / n)) for n in BATCH_FILES if (base / n).is_file()}
    return _join_batches(parts, str(base))


def _image_entry(relpath: str) -> tuple[str, int] | None:
    """(split, label) for ``[top/]split/class/file.png``; None for files that are not images of the tree."""
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) not in (3, 4) or any(p.startswith((".", "__")) for p in parts):
        return None  # hidden files, __MACOSX resource forks, READMEs, ...
    split, cls, fname = parts[-3:]
    if split not in SPLITS or not fname.lower().endswith(IMAGE_SUFFIXES):
        return None
    if cls not in _CLASS_INDEX:
        raise DataSourceError(
            f"unknown class folder {cls!r} in {relpath!r}: the tree must use the CIFAR-10 class names "
            f"{', '.join(CLASSES)}"
        )
    return split, _CLASS_INDEX[cls]


def _read_image_folder(base: Path, progress: bool):
    items = []
    for split in SPLITS:
        if not (base / split).is_dir():
            continue
        for p in (base / split).rglob("*"):
            entry = _image_entry(str(p.relative_to(base))) if p.is_file() else None
            if entry:
                items.append((entry[0], entry[1], str(p.relative_to(base)), p))
    return _assemble(items, str(base), progress)


def _read_tarball(path: Path, progress: bool):
    items, batches = [], {}
    try:
        # Stream mode reads the compressed file once, front to back, without an index.
        with tarfile.open(path, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                if base in BATCH_FILES and f"/{BATCHES_DIR}/" in f"/{m.name}":
                    batches[base] = tf.extractfile(m).read()
                    continue
                entry = _image_entry(m.name)
                if entry:
                    items.append((entry[0], entry[1], m.name, tf.extractfile(m).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataSourceError(
            f"{str(path)!r} is not a readable tarball ({type(exc).__name__}: {exc}); it may be truncated "
            "or corrupt. Copy or download it again (data/README.md gives the shared copy's sha256)."
        ) from exc
    if batches and not items:
        parts = {n: _unpickle_batch(raw, f"{path}:{n}") for n, raw in batches.items()}
        return _join_batches(parts, str(path))
    return _assemble(items, str(path), progress)


def _assemble(items: list, where: str, progress: bool):
    """Check the tree is complete, then decode its images in a fixed order (split, class, name)."""
    if not items:
        raise DataSourceError(
            f"{where} holds no images in the expected layout: train/<class>/*.png|jpg and "
            f"test/<class>/*.png|jpg (optionally under one top-level folder), classes {', '.join(CLASSES)}."
        )
    problems = []
    for split in SPLITS:
        have = {lab for s, lab, _, _ in items if s == split}
        if not have:
            problems.append(f"split '{split}' is missing")
        elif len(have) < len(CLASSES):
            missing = [CLASSES[i] for i in range(len(CLASSES)) if i not in have]
            problems.append(f"split '{split}' lacks classes {', '.join(missing)}")
    if problems:
        raise DataSourceError(f"{where} is an incomplete CIFAR-10 tree: {'; '.join(problems)}.")
    items.sort(key=lambda it: (SPLITS.index(it[0]), it[1], it[2]))
    x = _decode_images([(name, payload) for _, _, name, payload in items], where, progress)
    y = torch.tensor([lab for _, lab, _, _ in items], dtype=torch.int64)
    n_train = sum(1 for it in items if it[0] == "train")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _decode_one(name: str, payload) -> np.ndarray:
    """One image as uint8 [32, 32, 3]; ``payload`` is its bytes or a Path to read them from."""
    from PIL import Image

    raw = payload.read_bytes() if isinstance(payload, Path) else payload
    with Image.open(io.BytesIO(raw)) as im:
        if im.size != (32, 32):
            raise ValueError(f"image is {im.size[0]}x{im.size[1]}, CIFAR-10 images are 32x32")
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _decode_images(entries: list, where: str, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    # One thread on purpose: for 32x32 images most of the time is Python-level work under the GIL,
    # and a thread pool measured 1.5x *slower* here (20,000 JPEGs: 1.8 s in one thread, 2.9 s in two).
    out = np.empty((len(entries), 32, 32, 3), dtype=np.uint8)
    with tqdm(total=len(entries), desc="decoding CIFAR-10", unit="img", disable=not progress,
              mininterval=0.5) as bar:
        for i, (name, payload) in enumerate(entries):
            try:
                out[i] = _decode_one(name, payload)
            except Exception as exc:
                raise DataSourceError(
                    f"cannot decode {name!r} in {where} ({type(exc).__name__}: {exc}). "
                    "Replace or remove that file, or point at another copy."
                ) from exc
            if i % 1000 == 999:
                bar.update(1000)
        bar.update(len(entries) - bar.n)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


# ----- synthetic -----------------------------------------------------------------------------


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
    return CifarTensors(tx, ty, vx, vy, source=f"synthetic:{n_train}")


# --------------------------------------------------------------------------------------------
# Augmentation, normalisation, batching
# --------------------------------------------------------------------------------------------


def augment(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop of the zero-padded image plus random horizontal flip (p = 0.5), batched.

    Same distribution as torchvision's ``RandomCrop(32, padding=pad)`` + ``RandomHorizontalFlip()``,
    done for the whole batch with one gather instead of a loop over images.  The random offsets and
    flips are drawn from ``generator`` on its own device and then moved to ``x``'s device, so a CPU
    generator gives the same augmentation for CPU and CUDA batches.
    """
    _check_images(x, "x")
    if pad < 0:
        raise ValueError(f"pad must be >= 0, got {pad}")
    b = x.shape[0]
    dev = generator.device
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev).to(x.device)
    flip = torch.randint(0, 2, (b,), generator=generator, device=dev).to(x.device, torch.bool)
    return crop_flip(x, oy, ox, flip, pad)


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
    before augmentation and normalisation, which then run on the device.
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
        _check_images(x, "x")
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
        order = self.order().to(self._x.device)
        for b in range(self.start_batch, len(self)):
            # Only the batch preparation runs single-threaded; the caller's model step keeps its threads.
            with _one_cpu_thread(self.device.type == "cpu"):
                batch = self._make_batch(order, b)
            yield batch

    def _make_batch(self, order: torch.Tensor, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        idx = order[b * self.batch_size:(b + 1) * self.batch_size]
        xb = self._x[idx].to(self.device, non_blocking=True)
        yb = self._y[idx].to(self.device, non_blocking=True)
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
