"""What a model file says about its model, and the checks every loader and saver shares.

``model_meta`` describes a model: its architecture (a name ``ttq_lib.models.build_model`` knows), its number
of classes, its input normalisation, and every ternary layer with that layer's own rule (``ternary_layers``:
name, method, t, sparsity; the paper's Sec. 3 threshold rules).  ``build_from_meta`` rebuilds the untrained
model from it; metadata of version 1 (no ``ternary_layers``) is rebuilt from ``method``/``t``/``sparsity`` and
``keep_first``/``keep_last`` instead.  ``check_rebuilds`` is the save-time promise that a file will load: it
compares the rebuilt model with the one being saved.  ``read_tensors`` and ``load_checked`` read a file's
tensors and put them into the model, naming what is missing, extra or misshapen.
"""
from __future__ import annotations

from itertools import zip_longest
from pathlib import Path
from typing import Callable

import torch
import torch.nn as nn
from safetensors import SafetensorError
from safetensors.torch import load_file

from ..convert import ternarize_layer, ternarize_model, ternary_like_layers
from ..models import IMAGENET_MEAN, IMAGENET_STD, UnknownArchitectureError, build_model, known_architectures
from ..packed_layers import PackedTernaryConv2d, PackedTernaryLinear

META_KEYS = ("arch", "num_classes", "method", "t", "sparsity", "keep_first", "keep_last", "mean", "std",
             "ternary_layers")
# Describe the model's structure, so they are always read off the model: a caller's meta (often the one an
# older file was loaded with) must not contradict the layers actually saved.
_FROM_MODEL = ("method", "t", "sparsity", "keep_first", "keep_last", "ternary_layers")


class CheckpointError(ValueError):
    """A model file that cannot be loaded as asked: wrong architecture, unknown format, corrupt file."""


def _number(v) -> float | None:
    return None if v is None else float(v)


def layer_rules(model: nn.Module) -> list[dict]:
    """``[{"name", "method", "t", "sparsity"}, ...]`` for every ternary layer (trainable or packed), in order."""
    return [{"name": name, "method": getattr(m, "method", None), "t": _number(getattr(m, "t", None)),
             "sparsity": _number(getattr(m, "sparsity", None))} for name, m in ternary_like_layers(model)]


def _common(rules: list[dict], key: str, mixed):
    values = {r[key] for r in rules}
    return values.pop() if len(values) == 1 else mixed


def _num_classes(model: nn.Module) -> int | None:
    n = getattr(model, "num_classes", None)
    if isinstance(n, int):
        return n
    linears = [m for m in model.modules() if isinstance(m, (nn.Linear, PackedTernaryLinear))]
    return linears[-1].out_features if linears else None


def model_meta(model: nn.Module, **extra) -> dict:
    """The metadata that rebuilds ``model``: architecture, classes, and every ternary layer's rule.

    ``extra`` adds keys or overrides ``arch``, ``num_classes``, ``mean``, ``std``; the keys describing the
    ternary layers are always read off the model.  ``method``, ``t`` and ``sparsity`` summarise the layers
    ("mixed" / None when they differ); ``ternary_layers`` holds each layer's own.  Works for trainable ternary
    layers and packed ones alike (both expose ``ternary_codes()``)."""
    rules = layer_rules(model)
    meta = {"arch": getattr(model, "arch", None), "num_classes": _num_classes(model), "method": "fp",
            "t": None, "sparsity": None, "keep_first": True, "keep_last": True,
            "mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD), "ternary_layers": rules}
    if rules:
        ternary = {id(m) for _, m in ternary_like_layers(model)}
        meta.update(method=_common(rules, "method", "mixed"), t=_common(rules, "t", None),
                    sparsity=_common(rules, "sparsity", None))
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, PackedTernaryConv2d))]
        linears = [m for m in model.modules() if isinstance(m, (nn.Linear, PackedTernaryLinear))]
        meta["keep_first"] = bool(convs) and id(convs[0]) not in ternary
        meta["keep_last"] = bool(linears) and id(linears[-1]) not in ternary
    derived = {k: meta[k] for k in _FROM_MODEL}
    meta.update(extra)
    meta.update(derived)
    return meta


def build_from_meta(meta: dict) -> nn.Module:
    """Rebuild an (untrained) model from checkpoint metadata, on the CPU.

    Version 2 metadata lists the ternary layers: exactly those are converted, each with its own rule.
    Version 1 metadata has one rule and ``keep_first``/``keep_last``, which is all ``ternarize_model`` needs.
    """
    num_classes = meta.get("num_classes")
    model = build_model(meta["arch"]) if num_classes is None else build_model(meta["arch"], num_classes)
    rules = meta.get("ternary_layers")
    if rules is not None:
        layers = dict(model.named_modules())
        for r in rules:
            if r["name"] not in layers:
                raise ValueError(f"{meta['arch']} has no layer {r['name']!r}, which the metadata lists as ternary: "
                                 "the metadata's arch is not the architecture of the model it describes")
            try:
                ternarize_layer(model, r["name"], method=r["method"], t=r.get("t"), sparsity=r.get("sparsity"))
            except ValueError as e:
                raise ValueError(f"ternary layer {r['name']!r} cannot be rebuilt ({e}); give it a method, t and "
                                 "sparsity that ternarize_layer accepts") from None
    elif meta.get("method", "fp") != "fp":
        # Version 1 recorded the unused default t = 0.05 for TWN models as well; TWN's rule has no t.
        t = None if meta["method"] == "twn" else meta.get("t")
        ternarize_model(model, method=meta["method"], t=t, sparsity=meta.get("sparsity"),
                        keep_first=meta.get("keep_first", True), keep_last=meta.get("keep_last", True))
    return model


def _kind(name: str) -> str:
    return "the model itself" if name == "" else f"layer {name!r}"


def structure_problem(model: nn.Module, rebuilt: nn.Module, tensors: dict[str, torch.Tensor], arch,
                      any_type: frozenset[str] = frozenset()) -> str | None:
    """Why ``rebuilt`` (what a loader makes from the metadata) is not ``model`` with ``tensors``; None if it is.

    Compared: which modules there are and their types (any type at the names in ``any_type``, where a packed
    file puts packed layers), the tensor names and shapes the file holds, and every ternary layer's rule
    (name, method, t, sparsity).
    """
    built, own = dict(rebuilt.named_modules()), dict(model.named_modules())
    lacking = [n for n in built if n not in own]
    if lacking:
        return (f"{arch} has layer(s) {lacking[:5]} that the model lacks: save a model built by "
                f"ttq_lib.models.build_model({arch!r}), or pass meta={{'arch': ...}} naming the architecture it is")
    for name, m in own.items():
        if name in any_type:
            continue
        if name not in built:
            return (f"{_kind(name)} (a {type(m).__name__}) is not part of {arch}: only models built by "
                    f"ttq_lib.models.build_model({arch!r}) and then ternarized can be saved under that arch")
        if type(built[name]) is not type(m):
            packed = isinstance(m, (PackedTernaryConv2d, PackedTernaryLinear))
            fix = ("save packed models with ttq_lib.formats.save_packed" if packed else
                   f"save a model built by ttq_lib.models.build_model({arch!r}) and converted with "
                   "ternarize_model / ternarize_layer, or pass meta={'arch': ...} naming the architecture it is")
            return (f"{_kind(name)} is a {type(m).__name__}, which build_from_meta cannot recreate "
                    f"(arch={arch!r} makes a {type(built[name]).__name__} there): {fix}")
    expected = {k: tuple(v.shape) for k, v in tensors.items()}
    got = {k: tuple(v.shape) for k, v in rebuilt.state_dict().items()}
    missing = [k for k in expected if k not in got]
    unexpected = [k for k in got if k not in expected]
    wrong = [f"{k} {expected[k]} vs {got[k]}" for k in expected if k in got and got[k] != expected[k]]
    if missing or unexpected or wrong:
        return (f"the tensors do not fit {arch} as rebuilt from the metadata (only in the model: {missing[:5]}, "
                f"only in the rebuilt model: {unexpected[:5]}, shapes model vs rebuilt: {wrong[:5]}); pass the "
                "meta={'arch': ..., 'num_classes': ...} that builds this model")
    ours, theirs = layer_rules(model), layer_rules(rebuilt)
    if ours != theirs:
        diff = next((a, b) for a, b in zip_longest(ours, theirs) if a != b)
        return (f"the ternary layers would not load as saved: the model has {diff[0]}, the rebuilt model "
                f"{diff[1]}; convert layers with ternarize_model / ternarize_layer and set t or sparsity to "
                "values they accept")
    return None


def check_rebuilds(model: nn.Module, meta: dict, tensors: dict[str, torch.Tensor],
                   rebuild: Callable[[dict], nn.Module] = build_from_meta,
                   any_type: frozenset[str] = frozenset()) -> None:
    """Raise ValueError (the reason and the fix) unless ``rebuild(meta)`` gives back ``model`` and ``tensors``.

    Called before a model file is written, so a file that saves always loads; ``rebuild`` is what its loader
    does (``build_from_meta`` for checkpoints).  Builds on the CPU once: tens of milliseconds for ResNet-20.
    """
    what = f"cannot save this {type(model).__name__}"
    if meta.get("arch") is None:
        raise ValueError(f"{what}: the model has no `arch` and meta names none, so no loader could rebuild it; "
                         "pass meta={'arch': ...} with the name ttq_lib.models.build_model builds it from, such as "
                         f"meta={{'arch': 'torchvision.resnet18'}} (known: {known_architectures()})")
    try:
        rebuilt = rebuild(meta)
    except UnknownArchitectureError as e:
        raise ValueError(f"{what}: its arch cannot be rebuilt ({e}); pass meta={{'arch': ...}} naming the "
                         "architecture ttq_lib.models.build_model builds it from") from e
    except (ValueError, TypeError, KeyError) as e:
        raise ValueError(f"{what}: the metadata does not rebuild it: {e}") from e
    problem = structure_problem(model, rebuilt, tensors, meta["arch"], any_type)
    if problem:
        raise ValueError(f"{what}, the file would not load: {problem}")


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
