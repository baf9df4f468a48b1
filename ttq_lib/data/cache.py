"""The decode cache: CIFAR-10 decoded once per source, kept as one safetensors file.

The cache file is ``<source name>.ttq-cache-<key>.safetensors``; the key hashes the tarball's bytes, or a
folder's file paths, sizes and modification times, so a changed source is decoded again.  See
:func:`ttq_lib.data.load_cifar10` for where the file is looked for and written.

A new cache replaces the older caches of the same source in its folder, and only those: two sources may
share a file name (``/a/cifar.tar.gz`` and ``/b/cifar.tar.gz`` both cache into ``~/.cache/ttq-workbook``),
so a cache is removed only if its header's ``source_id`` (the source's absolute path) names the same one.
"""
from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import warnings
from pathlib import Path

import torch

from ..formats.atomic import atomic_path
from .cifar10 import CLASSES, SPLITS, CifarTensors
from .inputs import cache_dir as user_cache_dir

log = logging.getLogger(__name__)

# Bump when decoding changes what ends up in the tensors, so that old caches are not reused.
CACHE_FORMAT = 1
BATCH_FILES = tuple(f"data_batch_{i}" for i in range(1, 6)) + ("test_batch",)


def cache_key(kind: str, base: Path) -> str:
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
    repo = Path(__file__).resolve().parents[2]
    if (repo / "pyproject.toml").is_file():  # an editable install / source checkout
        dirs.append(repo / "data" / "cache")
    dirs.append(user_cache_dir())
    return dirs


def cache_dirs(path: Path, cache_dir) -> list[Path]:
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


def read_cache(file: Path, key: str):
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


def write_cache(candidates: list[Path], name: str, key: str, data: CifarTensors, label: str) -> Path | None:
    from safetensors.torch import save_file

    tensors = {
        "train_x": data.train_x.contiguous(), "train_y": data.train_y.contiguous(),
        "test_x": data.test_x.contiguous(), "test_y": data.test_y.contiguous(),
    }
    sid = source_id(label)
    meta = {"key": key, "source": label, "source_id": sid, "format": str(CACHE_FORMAT)}
    for folder in candidates:
        if not _dir_writable(folder):
            continue
        target = folder / name
        try:
            # 0644 whatever the umask: others on the machine may share the cache folder
            with atomic_path(target, mode=0o644) as tmp:
                save_file(tensors, str(tmp), metadata=meta)
        except OSError as exc:
            log.info("cannot write the CIFAR-10 cache in %s (%s); trying the next folder", folder, exc)
            continue
        _remove_stale(folder, name, sid)
        log.info("CIFAR-10 cache written to %s", target)
        return target
    warnings.warn(f"could not write a CIFAR-10 cache in any of {[str(c) for c in candidates]}; "
                  "the source will be decoded again next time")
    return None


def source_id(label: str) -> str:
    """The source a cache came from, independent of the current folder: ``label`` ("tar:cifar.tar.gz",
    "folder:...", "download:...") with its path made absolute (symlinks kept: the path the user named)."""
    kind, sep, rest = label.partition(":")
    return f"{kind}:{os.path.abspath(os.path.expanduser(rest))}" if sep and rest else label


def _stored_source_id(file: Path) -> str | None:
    """The ``source_id`` in a cache's header (only the header is read), None if unknown or unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception:  # damaged or not safetensors: whose it is cannot be told, so it is kept
        return None
    if meta.get("source_id"):
        return meta["source_id"]
    # Caches written before source_id existed: their label's path is trusted only if it is absolute,
    # since a relative one was relative to a working folder that is unknown now.
    kind, sep, rest = meta.get("source", "").partition(":")
    return f"{kind}:{os.path.normpath(rest)}" if sep and os.path.isabs(rest) else None


def _remove_stale(folder: Path, name: str, sid: str) -> None:
    """Remove the other caches of source ``sid`` in ``folder`` (older contents of the same source)."""
    stem = name.split(".ttq-cache-")[0]
    pattern = re.compile(re.escape(stem) + r"\.ttq-cache-[0-9a-f]{16}\.safetensors")
    for other in folder.iterdir():
        if other.name != name and pattern.fullmatch(other.name) and _stored_source_id(other) == sid:
            try:
                other.unlink()
            except OSError:
                pass

