"""Convert any torch model to a ternary one in place, and inspect its ternary layers.

``ternarize_model`` swaps ``nn.Conv2d`` / ``nn.Linear`` for the layers of :mod:`ttq_lib.layers` (the paper's
Sec. 4 keeps the first conv and the last fully connected layer in full precision); ``ternarize_layer`` swaps
one named layer with its own rule (how a model file's per-layer metadata is replayed); ``layer_stats`` gives
per layer the quantities of the paper's Fig. 3 (Wp, Wn and the shares of negative / zero / positive weights).
"""
from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn

from .layers import TernaryConv2d, TernaryLinear, TernaryMixin
from .quantizers import code_shares
from .thresholds import Rule


def _first_conv_and_last_linear(model: nn.Module) -> tuple[str | None, str | None]:
    first_conv = last_linear = None
    for name, m in model.named_modules():
        if isinstance(m, nn.Conv2d) and first_conv is None:
            first_conv = name
        if isinstance(m, nn.Linear):
            last_linear = name
    return first_conv, last_linear


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` in place of the submodule called ``name`` (a dotted path such as ``layer1.0.conv1``)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


def _ternary_copy(m: nn.Module, scale_init: str, **kw) -> nn.Module:
    factory = dict(device=m.weight.device, dtype=m.weight.dtype)
    if isinstance(m, nn.Conv2d):
        new = TernaryConv2d(m.in_channels, m.out_channels, m.kernel_size, stride=m.stride,
                            padding=m.padding, dilation=m.dilation, groups=m.groups,
                            bias=m.bias is not None, padding_mode=m.padding_mode, **factory, **kw)
    else:
        new = TernaryLinear(m.in_features, m.out_features, bias=m.bias is not None, **factory, **kw)
    with torch.no_grad():
        new.weight.copy_(m.weight)
        if m.bias is not None:
            new.bias.copy_(m.bias)
    new.init_scales_(scale_init)
    return new


def ternarize_layer(model: nn.Module, name: str, method: str = "ttq", t: float | None = None,
                    sparsity: float | None = None, scale_init: str = "one", rule: Rule | None = None) -> nn.Module:
    """Replace the one ``nn.Conv2d`` or ``nn.Linear`` called ``name`` by a ternary copy, in place; returns it.

    The layer gets its own rule (a :class:`~ttq_lib.thresholds.Rule`, or ``method``, ``t`` or ``sparsity`` as in
    :func:`ternarize_model`), so a model whose layers differ (a per-layer ``t``) can be rebuilt layer by layer.
    """
    rule = rule or Rule(method, t, sparsity)
    try:
        m = model.get_submodule(name)
    except AttributeError:
        raise ValueError(f"the model has no layer {name!r}; list its layers with model.named_modules()") from None
    # Exact types: a subclass (already ternary, or packed) would lose its own behaviour in the copy.
    if type(m) not in (nn.Conv2d, nn.Linear):
        raise ValueError(f"layer {name!r} is a {type(m).__name__}; only plain nn.Conv2d and nn.Linear layers "
                         "can be ternarized (build a fresh model to convert it again)")
    new = _ternary_copy(m, rule=rule, scale_init=scale_init)
    replace_module(model, name, new)
    return new


def ternarize_model(
    model: nn.Module,
    method: str = "ttq",
    t: float | None = None,
    sparsity: float | None = None,
    keep_first: bool = True,
    keep_last: bool = True,
    scale_init: str = "one",
    exclude: Iterable[str] = (),
    rule: Rule | None = None,
) -> nn.Module:
    """Replace the model's Conv2d and Linear layers by ternary ones, in place; returns the model.

    Following the paper (Sec. 4), the first convolution and the last fully connected layer stay in full
    precision by default (``keep_first``, ``keep_last``); ``exclude`` names further layers to keep.
    ``method`` is "ttq" (trained Wp, Wn; Eqs. 6-8) or "twn" (the baseline); ``t`` (TTQ only; omitted, the
    paper's 0.05) or ``sparsity`` picks the threshold rule (TWN's own is 0.7 * mean|w|), or ``rule`` gives it made
    (:class:`~ttq_lib.thresholds.Rule`); ``scale_init`` starts Wp, Wn at 1.0 ("one", the official code) or at the mean magnitude of
    each region ("mean").  Latent weights start as copies of the full-precision ones.
    """
    if any(isinstance(m, TernaryMixin) for m in model.modules()):
        raise ValueError("this model already has ternary layers; build a fresh model to convert it again")
    rule = rule or Rule(method, t, sparsity)  # checked once, for every layer
    first_conv, last_linear = _first_conv_and_last_linear(model)
    keep = set(exclude)
    if keep_first and first_conv is not None:
        keep.add(first_conv)
    if keep_last and last_linear is not None:
        keep.add(last_linear)
    targets = [(n, m) for n, m in model.named_modules()
               if type(m) in (nn.Conv2d, nn.Linear) and n not in keep]
    for name, _ in targets:
        ternarize_layer(model, name, scale_init=scale_init, rule=rule)
    return model


def ternary_layers(model: nn.Module) -> list[tuple[str, TernaryMixin]]:
    """The (qualified name, module) of every trainable ternary layer, in model order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, TernaryMixin)]


def ternary_like_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers that expose ``ternary_codes()`` and ``scales()``: trainable ternary layers and packed ones
    (:mod:`ttq_lib.packed_layers`), so sizes and statistics work on both."""
    return [(n, m) for n, m in model.named_modules()
            if callable(getattr(m, "ternary_codes", None)) and callable(getattr(m, "scales", None))]


@torch.no_grad()
def layer_stats(model: nn.Module) -> list[dict]:
    """Per ternary layer: Wp, Wn, threshold, and the shares of negative / zero / positive weights.

    These are the quantities of the paper's Fig. 3 (scales and sparsity over training).
    """
    rows = []
    for name, m in ternary_layers(model):
        codes = m.ternary_codes()
        wp, wn = m.scales()
        rows.append({"name": name, "numel": codes.numel(), "wp": float(wp), "wn": float(wn),
                     "threshold": float(m.threshold()), **code_shares(codes)})
    return rows
