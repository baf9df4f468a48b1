"""Where the notebooks find things: the checkout, fast mode, torch threads, the data and the pretrained model.

Every notebook starts with ``ROOT = workbook.find_repo_root()``, ``FAST = workbook.fast_mode()`` and
``workbook.set_threads()``; data and models come from the one resolver (:mod:`ttq_lib.data.inputs`), and each
notebook prints which it uses.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..data import load_cifar10
from ..data.inputs import PRETRAINED_FILES, InputUnavailable, resolve_data, resolve_pretrained

ENV_FAST = "TTQ_FAST"
ENV_THREADS = "TTQ_THREADS"


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


def pretrained_checkpoint(root: str | os.PathLike | None = None, arch: str = "resnet20") -> Path:
    """The published full-precision ``arch``, found or downloaded by the resolver (:mod:`ttq_lib.data.inputs`:
    ``$TTQ_PRETRAINED_DIR``, the offline copy, the user cache, ``$TTQ_PRETRAINED_URL``); prints which file and
    where it came from.  No other model ever stands in for it."""
    found = resolve_pretrained(arch)
    print(f"model: {arch}, {found}")
    return Path(found.value)


def resolve_start_checkpoint(start_from: str | None, root: str | os.PathLike | None = None) -> Path | None:
    """Find a run's starting checkpoint (``--start-from``) on this machine: as written (relative to the
    checkout or absolute), else, for a published pretrained file, wherever the resolver finds it."""
    if not start_from:
        return None
    root = find_repo_root(root)
    for p in (root / start_from, Path(start_from)):
        if p.is_file():
            return p
    name = Path(start_from).name
    model = next((m for m, file in PRETRAINED_FILES.items() if file == name), None)
    return Path(resolve_pretrained(model).value) if model else None


def data_source() -> str:
    """What to pass to :func:`ttq_lib.data.load_cifar10`: the resolver's answer (``$TTQ_DATA``, the offline copy,
    the user cache, else a download).  In fast mode (tests) nothing is downloaded: with no local copy the
    notebook runs on synthetic images and says so; in full mode a missing source stops it with the
    resolver's error, never with synthetic numbers."""
    try:
        return resolve_data(None, download=not fast_mode()).value
    except InputUnavailable:
        print("fast mode, and no CIFAR-10 on this machine: using SYNTHETIC images, so no accuracy below means "
              "anything (set TTQ_DATA, or run in full mode to download CIFAR-10)")
        return "synthetic"


def load_data():
    """CIFAR-10 from :func:`data_source`, loaded (decoded once, then cached); prints which data and from where."""
    data = load_cifar10(data_source(), progress=False)
    print(f"data: {data.name}, {data.source} ({data.origin})")
    return data
