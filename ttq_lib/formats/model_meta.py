"""What a model file says about its model, and the checks every loader shares.

``model_meta`` describes a model (architecture, method, threshold rule, which layers stay full precision,
input normalisation) so that ``build_from_meta`` can rebuild it untrained; ``read_tensors`` and
``load_checked`` read a file's tensors and put them into the model, naming what is missing, extra or
misshapen.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..convert import ternarize_model, ternary_like_layers
from ..models import IMAGENET_MEAN, IMAGENET_STD, build_model
from ..packed_layers import PackedTernaryConv2d, PackedTernaryLinear

META_KEYS = ("arch", "method", "t", "sparsity", "keep_first", "keep_last", "mean", "std")


class CheckpointError(ValueError):
    """A model file that cannot be loaded as asked: wrong architecture, unknown format, corrupt file."""


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


def read_tensors(path: str | Path, error: type = CheckpointError) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file; ``error`` names the file when it cannot be read."""
    try:
        return load_file(str(path))
    except SafetensorError as e:
        raise error(f"{path} is not a readable safetensors file ({e}): it is corrupt or truncated; copy or "
                    "re-create it") from e


def load_checked(model: nn.Module, tensors: dict, where, error: type = CheckpointError) -> nn.Module:
    """Load ``tensors`` into ``model`` after checking they have exactly the keys and shapes of its
    ``state_dict()``; else raise ``error`` naming the differences.  Returns the model.

    ``num_batches_tracked`` may be absent: checkpoints from PyTorch < 0.4.1 lack it, and it only matters
    for batch norm with ``momentum=None``.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    missing = [k for k in expected if k not in tensors and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [k for k, v in tensors.items() if k in expected and tuple(v.shape) != expected[k]]
    if missing or unexpected or wrong:
        raise error(f"{where} does not fit {getattr(model, 'arch', type(model).__name__)}: missing tensor(s) "
                    f"{missing[:5]}, unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    model.load_state_dict(tensors, strict=False)
    return model
