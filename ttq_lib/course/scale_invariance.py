"""Notebook 03: why TTQ and TWN move differently at the same learning rate (batch norm makes scale irrelevant).

A layer followed by batch norm (in training mode, batch statistics) computes the same function for weights ``q``
and ``c * q`` (c > 0), up to batch norm's small ``eps``: L(c q) ~= L(q).  Differentiating in c and in q gives

* ``sum_i q_i dL/dq_i ~= 0``; for TTQ, ``q = +Wp`` on I_p and ``-Wn`` on I_n, so with Eq. 7
  ``Wp * dL/dWp + Wn * dL/dWn ~= 0``: the scales' gradient only changes the ratio Wp / Wn;
* ``dL/dq (c q) ~= dL/dq (q) / c``: the gradient shrinks as the weights' scale grows.

TTQ starts at Wp = Wn = 1 (the official code), so ``dL/dw = Wp * dL/dq`` (Eq. 8) is the gradient of a
scale-1 layer; TWN's ``q = alpha * codes`` with ``alpha ~ mean|w|`` (about 0.1) gets a gradient about
1 / alpha times larger, passed straight to the latent weights.  Relative to the latent weights' own size, one
SGD step therefore moves TWN's latent weights several times further than TTQ's at the same learning rate.
:func:`layer_gradients` measures both on one batch.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..convert import ternary_layers

__all__ = ["layer_gradients"]


def layer_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[dict]:
    """One forward / backward pass of ``model`` in training mode (batch statistics) on a normalised batch.

    Per ternary layer: ``name``, ``method``, ``scale`` (Wp, Wn's mean for TTQ; TWN's alpha), ``rel_grad``
    = ||dL/dw|| / ||w|| (how far one SGD step of lr 1 moves the latent weights, relative to their size) and, for
    TTQ, ``wp_gwp`` = Wp * dL/dWp, ``wn_gwn`` = Wn * dL/dWn (their sum is ~0 under batch norm).  Gradients are
    cleared afterwards, batch-norm running statistics restored, and the model's mode restored.
    """
    layers = ternary_layers(model)
    if not layers:
        raise ValueError("the model has no ternary layers: pass a model from ttq_lib.ternarize_model")
    was_training = model.training
    bn_state = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    model.train()
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    rows = []
    with torch.no_grad():
        for name, m in layers:
            wp, wn = m.scales()
            row = {"name": name, "method": m.method, "scale": float((wp + wn) / 2),
                   "rel_grad": float(m.weight.grad.norm() / m.weight.norm())}
            if m.method == "ttq":
                row.update(wp_gwp=float(m.wp * m.wp.grad), wn_gwn=float(m.wn * m.wn.grad))
            rows.append(row)
    model.zero_grad(set_to_none=True)
    model.load_state_dict(bn_state, strict=False)
    model.train(was_training)
    return rows
