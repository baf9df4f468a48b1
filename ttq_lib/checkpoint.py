"""Load and save model checkpoints: the pretrained CIFAR ResNets and this project's own safetensors files.

Our checkpoints are safetensors files whose metadata says how to rebuild the model (architecture, method,
threshold rule, which layers stay full precision, input normalisation), so ``load_model`` needs nothing
but the path.  Third-party ``.th``/``.pt`` files are read with ``torch.load(..., weights_only=True)``.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from .atomic import atomic_path
from .convert import ternarize_model
from .models import DEPTHS, build_model
from .packed import (PackedTernaryConv2d, PackedTernaryLinear, is_packed_file, load_packed,
                     ternary_like_layers)

FORMAT = "ttq-checkpoint"
VERSION = "1"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
META_KEYS = ("arch", "method", "t", "sparsity", "keep_first", "keep_last", "mean", "std")


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked: wrong architecture, unknown format, corrupt file."""


def model_meta(model: nn.Module, **extra) -> dict:
    """The metadata that rebuilds ``model``: architecture and how it was ternarized.

    Works for trainable ternary layers and packed ones alike (both expose ``ternary_codes()``)."""
    layers = [m for _, m in ternary_like_layers(model)]
    meta = {"arch": getattr(model, "arch", type(model).__name__), "method": "fp",
            "t": None, "sparsity": None, "keep_first": True, "keep_last": True,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if layers:
        m0, ternary = layers[0], {id(m) for m in layers}
        meta.update(method=getattr(m0, "method", None), t=getattr(m0, "t", None),
                    sparsity=getattr(m0, "sparsity", None))
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, PackedTernaryConv2d))]
        linears = [m for m in model.modules() if isinstance(m, (nn.Linear, PackedTernaryLinear))]
        meta["keep_first"] = bool(convs) and id(convs[0]) not in ternary
        meta["keep_last"] = bool(linears) and id(linears[-1]) not in ternary
    meta.update(extra)
    return meta


def build_from_meta(meta: dict) -> nn.Module:
    """Rebuild an (untrained) model from checkpoint metadata."""
    model = build_model(meta["arch"])
    if meta.get("method", "fp") != "fp":
        ternarize_model(model, method=meta["method"], t=meta.get("t"), sparsity=meta.get("sparsity"),
                        keep_first=meta.get("keep_first", True), keep_last=meta.get("keep_last", True))
    return model


def save_checkpoint(path: str | Path, model: nn.Module, meta: dict | None = None) -> Path:
    """Write ``model``'s weights and metadata as one safetensors file, atomically."""
    meta = model_meta(model, **(meta or {}))
    header = {"format": FORMAT, "version": VERSION, **{k: json.dumps(v) for k, v in meta.items()}}
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
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


def _read_our_meta(path: Path) -> dict:
    header = _header(path)
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a safetensors file but not a ttq-workbook checkpoint "
                              f"(format={header.get('format')!r})")
    if header.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {header.get('version')!r}; this ttq_lib "
                              f"reads version {VERSION}: upgrade ttq-workbook")
    return {k: json.loads(v) for k, v in header.items() if k not in ("format", "version")}


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


def load_model(path: str | Path, arch: str | None = None, *, decode: str = "lazy",
               map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load any checkpoint this project knows: ours (safetensors), a packed file, or a pretrained ``.th``.

    Returns ``(model, meta)``.  ``arch``, if given, must match the checkpoint, else a clear error names both.
    Packed files (``ttq pack``) load as packed-inference models (``decode`` "lazy" or "once").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if is_packed_file(path):
        model, meta = load_packed(path, decode=decode)
    elif path.suffix == ".safetensors":
        meta = _read_our_meta(path)
        try:
            sd = load_file(str(path))
        except SafetensorError as e:
            raise CheckpointError(f"{path} is corrupt or truncated ({e}); re-copy or re-create it") from e
        model = build_from_meta(meta)
        _load_strict(model, sd, path)
    else:
        sd = load_state_dict_file(path)
        meta = {"arch": arch_of_state_dict(sd), "method": "fp", "t": None, "sparsity": None,
                "keep_first": True, "keep_last": True, "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
        model = build_from_meta(meta)
        _load_strict(model, sd, path)
    if arch is not None and meta["arch"] != arch:
        raise CheckpointError(f"{path} holds a {meta['arch']}, but {arch} was asked for: "
                              f"pass --model {meta['arch']} or another checkpoint")
    return model.to(map_location), meta


def _load_strict(model: nn.Module, sd: dict, path: Path) -> None:
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # checkpoints from PyTorch < 0.4.1 have no num_batches_tracked; it only matters for momentum=None
    missing = [k for k in expected if k not in sd and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in sd if k not in expected]
    bad = [k for k, v in sd.items() if k in expected and tuple(v.shape) != expected[k]]
    if missing or unexpected or bad:
        raise CheckpointError(f"{path} does not fit {getattr(model, 'arch', 'the model')}: "
                              f"missing {missing[:3]}, unexpected {unexpected[:3]}, shape mismatch {bad[:3]}")
    model.load_state_dict(sd, strict=False)


def load_pretrained(path: str | Path, arch: str | None = None) -> nn.Module:
    """A full-precision CIFAR ResNet from a pretrained checkpoint (e.g. ../shared/pretrained/*.th)."""
    return load_model(path, arch)[0]
