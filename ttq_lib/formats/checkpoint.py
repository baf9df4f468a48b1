"""This project's trainable checkpoints (safetensors), third-party ``.th`` files, and a run's training state.

A checkpoint is one safetensors file whose metadata (:mod:`ttq_lib.formats.model_meta`) says how to rebuild
the model, so loading it needs nothing but the path.  Version 2 metadata lists every ternary layer with its
own rule and the number of classes; version 1 files (one rule, ``keep_first``/``keep_last``) still load.
``save_checkpoint`` rebuilds the model from the metadata before writing and refuses, naming the reason, a
model the file could not give back.  Third-party ``.th``/``.pt`` files (the pretrained CIFAR
ResNets) are read with ``torch.load(..., weights_only=True)``.  ``state.pt`` holds what a resumed run needs
beyond the weights: the optimizer state and the epoch.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from ..models import DEPTHS, IMAGENET_MEAN, IMAGENET_STD
from .atomic import atomic_path
from .model_meta import CheckpointError, build_from_meta, check_rebuilds, load_checked, model_meta, read_tensors

FORMAT = "ttq-checkpoint"
VERSION = "2"
#: Versions this module reads: "1" lacks ``ternary_layers`` and ``num_classes``.
READABLE_VERSIONS = ("1", "2")


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict | None = None) -> Path:
    """Write ``model``'s weights and metadata as one safetensors file, atomically.

    ``meta`` adds keys (epoch, mean, std, ...) or names the architecture (``{"arch": "torchvision.resnet18"}``)
    for a model without an ``arch`` attribute.  Raises ValueError, and writes nothing, if the model could not be
    rebuilt from the metadata (see :func:`ttq_lib.formats.model_meta.check_rebuilds`).
    """
    meta = model_meta(model, **(meta or {}))
    encoded = {k: json.dumps(v) for k, v in meta.items()}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    # Checked against the metadata as a loader will decode it, so whatever JSON changes is caught too.
    check_rebuilds(model, {k: json.loads(v) for k, v in encoded.items()}, tensors)
    header = {"format": FORMAT, "version": VERSION, **encoded}
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def _header(path: Path) -> dict:
    try:
        with safe_open(str(path), framework="pt") as f:
            return f.metadata() or {}
    except SafetensorError as e:
        raise CheckpointError(f"{path} is not a readable safetensors file ({e}): it is corrupt or "
                              "truncated; re-copy or re-create it") from e


def read_checkpoint_meta(path: str | Path) -> dict:
    """The decoded metadata of one of our checkpoints; CheckpointError for any other file."""
    path = Path(path)
    header = _header(path)
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a ttq-workbook checkpoint "
                              f"(format={header.get('format')!r})")
    if header.get("version") not in READABLE_VERSIONS:
        raise CheckpointError(f"{path} has checkpoint version {header.get('version')!r}; this ttq_lib "
                              f"reads versions {', '.join(READABLE_VERSIONS)}: upgrade ttq-workbook")
    return {k: json.loads(v) for k, v in header.items() if k not in ("format", "version")}


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """One of our checkpoints as ``(model, meta)``, the model rebuilt from the metadata."""
    path = Path(path)
    meta = read_checkpoint_meta(path)
    return load_checked(build_from_meta(meta), read_tensors(path), path), meta


def arch_of_state_dict(sd: dict) -> str:
    """Infer resnet20/32/44/56 from the block count of stage 1; clear error if it is no CIFAR ResNet."""
    blocks = {int(m.group(1)) for k in sd if (m := re.match(r"layer1\.(\d+)\.", k))}
    if "conv1.weight" not in sd or "linear.weight" not in sd or not blocks:
        sample = ", ".join(list(sd)[:4])
        raise CheckpointError(f"not a CIFAR ResNet checkpoint: expected keys conv1.*, layer1.*, linear.*; "
                              f"found {sample}, ...")
    n = max(blocks) + 1
    arch = f"resnet{6 * n + 2}"
    if arch not in DEPTHS:
        raise CheckpointError(f"checkpoint has {n} blocks per stage ({arch}), not one of {list(DEPTHS)}")
    return arch


def load_state_dict_file(path: str | Path) -> dict:
    """Read a third-party checkpoint safely: unwrap 'state_dict', strip DataParallel's 'module.'."""
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors, truncated zip, or a disallowed object type
        raise CheckpointError(f"cannot read {path} as a PyTorch checkpoint ({type(e).__name__}: {e})") from e
    sd = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path} holds no state_dict of tensors")
    return {k.removeprefix("module."): v for k, v in sd.items()}


def load_third_party(path: str | Path) -> tuple[nn.Module, dict]:
    """A pretrained full-precision CIFAR ResNet (``.th``/``.pt``) as ``(model, meta)``; ImageNet normalisation."""
    sd = load_state_dict_file(path)
    meta = {"arch": arch_of_state_dict(sd), "method": "fp", "t": None, "sparsity": None,
            "keep_first": True, "keep_last": True, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    return load_checked(build_from_meta(meta), sd, path), meta


def save_training_state(path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer, epoch: int,
                        wall_time_s: float) -> None:
    """Write what resuming a run needs beyond its checkpoint (optimizer state, epoch), atomically."""
    with atomic_path(path) as tmp:
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch,
                    "wall_time_s": wall_time_s}, tmp)


def load_training_state(path: str | Path, device: str | torch.device = "cpu") -> dict:
    """The dict :func:`save_training_state` wrote (tensors only, read with ``weights_only=True``)."""
    return torch.load(path, map_location=device, weights_only=True)
