"""Where the notebooks find things: the checkout, fast mode, torch threads, the data and the pretrained model.

Every notebook starts with ``ROOT = workbook.find_repo_root()``, ``FAST = workbook.fast_mode()`` and
``workbook.set_threads()``; the rest of this module locates files on this machine, from the environment
(``$TTQ_DATA``, ``$TTQ_DATA_TGZ``, ``$TTQ_PRETRAINED_DIR``) or from the ``../shared`` folder beside the checkout.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

ENV_FAST = "TTQ_FAST"
ENV_THREADS = "TTQ_THREADS"
ENV_PRETRAINED = "TTQ_PRETRAINED_DIR"
DATA_ENVS = ("TTQ_DATA", "TTQ_DATA_TGZ")
SHARED_TARBALL = "data/cifar10-jpeg.tar.gz"
FP_FALLBACK = "results/cpu-resnet20/fp/last.safetensors"


def _is_repo(path: Path) -> bool:
    toml = path / "pyproject.toml"
    return toml.is_file() and 'name = "ttq-workbook"' in toml.read_text(errors="replace")


def find_repo_root(start: str | os.PathLike | None = None) -> Path:
    """The ttq-workbook checkout: ``start`` (default: the current directory) or its nearest parent with
    this project's ``pyproject.toml``; failing that, the checkout this package was imported from.

    Notebooks run with the current directory ``notebooks/`` (Jupyter, nbval), scripts from the root:
    both find the same folder.
    """
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_repo(folder):
            return folder
    installed = Path(__file__).resolve().parents[2]  # ttq_lib/course/workbook.py -> the checkout
    if _is_repo(installed):
        return installed
    raise FileNotFoundError(f"no ttq-workbook checkout (a pyproject.toml naming ttq-workbook) at or above {here}")


def fast_mode() -> bool:
    """True when ``TTQ_FAST`` is set to a true value (1, true, yes): notebooks then use tiny subsets."""
    return os.environ.get(ENV_FAST, "").strip().lower() in ("1", "true", "yes", "on")


def set_threads(n: int | None = None) -> int:
    """Set torch's CPU threads to ``n``, else ``$TTQ_THREADS``, else 1; returns the number set.

    One thread is the default because a notebook often shares its machine with a training run: on a
    busy two-core machine a training step of ResNet-20 was measured 8x slower with two threads (they
    wait for each other at every operation) than with one.  On an idle machine set ``TTQ_THREADS``.
    """
    if n is None:
        n = int(os.environ.get(ENV_THREADS) or 1)
    if n < 1:
        raise ValueError(f"threads must be >= 1, got {n}")
    torch.set_num_threads(n)
    return n


def _shared(root: Path) -> Path:
    return root.parent / "shared"


def _pretrained_folders(root: Path) -> list[Path]:
    """Folders that may hold pretrained ``.th`` files: ``$TTQ_PRETRAINED_DIR`` if set, then ``../shared/pretrained``."""
    folders = [Path(os.environ[ENV_PRETRAINED])] if os.environ.get(ENV_PRETRAINED) else []
    return folders + [_shared(root) / "pretrained"]


def pretrained_checkpoint(root: str | os.PathLike | None = None, arch: str = "resnet20") -> Path:
    """The full-precision starting model: ``$TTQ_PRETRAINED_DIR/<arch>-*.th``, else
    ``../shared/pretrained/<arch>-*.th`` beside the checkout, else (ResNet-20 only) the committed
    ``results/cpu-resnet20/fp/last.safetensors`` (the pretrained model fine-tuned on the JPEG copy).
    """
    root = find_repo_root(root)
    for folder in _pretrained_folders(root):
        found = sorted(folder.glob(f"{arch}-*.th")) if folder.is_dir() else []
        if found:
            return found[0]
    if arch == "resnet20" and (root / FP_FALLBACK).is_file():
        return root / FP_FALLBACK
    raise FileNotFoundError(f"no pretrained {arch}: set {ENV_PRETRAINED} to a folder holding {arch}-*.th")


def resolve_start_checkpoint(start_from: str | None, root: str | os.PathLike | None = None) -> Path | None:
    """Find a run's starting checkpoint (``--start-from``) on this machine: as written (relative to the
    checkout or absolute), else a pretrained file of the same name (:func:`pretrained_checkpoint`'s folders)."""
    if not start_from:
        return None
    root = find_repo_root(root)
    for p in (root / start_from, Path(start_from)):
        if p.is_file():
            return p
    name = Path(start_from).name
    for folder in _pretrained_folders(root):
        if (folder / name).is_file():
            return folder / name
    return None


def data_source(root: str | os.PathLike | None = None) -> str:
    """What to pass to :func:`ttq_lib.data.load_cifar10`: ``$TTQ_DATA`` or ``$TTQ_DATA_TGZ`` if set, else the
    shared JPEG tarball ``../shared/data/cifar10-jpeg.tar.gz`` if it exists, else ``"synthetic"``."""
    for var in DATA_ENVS:
        if os.environ.get(var):
            return os.environ[var]
    tarball = _shared(find_repo_root(root)) / SHARED_TARBALL
    return str(tarball) if tarball.is_file() else "synthetic"
