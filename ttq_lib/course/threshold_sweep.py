"""Notebook 01: the accuracy of a whole ternarized network against the threshold factor t and the sparsity r.

No training: each point ternarizes a copy of the trained full-precision model with one rule (paper Sec. 3:
``t * max|w|``, or a fixed sparsity r, the r-quantile of |w|), re-estimates the batch-norm statistics on some
training images (:func:`ttq_lib.training.bn_recalibration.recalibrate_bn`; without it every point sits near
chance, because the ternary layers change each layer's output scale) and measures the test accuracy.  Every
point starts from the same full-precision weights and sees the same calibration images, so the curve shows
what the threshold alone does to the network -- the starting point TTQ training then improves on.  The scales
start at the mean magnitude of each region (``scale_init="mean"``, the least-squares scales of Sec. 3 of the
notebook), so the asymmetry between positive and negative weights is kept; batch norm absorbs the rest.
"""
from __future__ import annotations

import copy
import time
from typing import Callable, Sequence

import torch
import torch.nn as nn

from ..convert import layer_stats, ternarize_model, ternary_layers
from ..training.bn_recalibration import recalibrate_bn_on
from ..training.evaluate import accuracy

__all__ = ["ternary_point", "accuracy_sweep", "PAPER_BEST_R"]

# The paper's fixed-sparsity experiment (ResNet-20, CIFAR-10, after TTQ training): r from 0 (binary) to 0.5,
# best between 0.3 and 0.5.
PAPER_BEST_R = (0.3, 0.5)


def _network_shares(model: nn.Module) -> tuple[float, float]:
    """(zero share over all ternary weights, mean over layers of threshold / max|w|)."""
    rows = layer_stats(model)
    n = sum(r["numel"] for r in rows)
    zero = sum(r["zero"] * r["numel"] for r in rows) / n
    t_eq = [r["threshold"] / float(m.weight.detach().abs().max()) for r, (_, m) in zip(rows, ternary_layers(model))]
    return zero, sum(t_eq) / len(t_eq)


def ternary_point(fp_model: nn.Module, data, mean, std, method: str = "ttq", t: float | None = None,
                  sparsity: float | None = None, recal_images: int = 1024, scale_init: str = "mean",
                  batch_size: int = 256, seed: int = 0, before: bool = False) -> dict:
    """Ternarize a copy of ``fp_model`` with one rule, recalibrate batch norm, and test it.

    ``data`` has ``train_x, train_y, test_x, test_y`` (uint8 images, as :class:`ttq_lib.data.CifarTensors`);
    the first ``recal_images`` images of a seeded shuffle of the training split re-estimate batch norm, the
    whole test split of ``data`` is scored.  Returns ``{"method", "t", "sparsity", "accuracy" (percent),
    "accuracy_before" (before recalibration, when ``before``; else None), "zero" (share of zeros over all
    ternary weights), "t_equiv" (mean over layers of threshold / max|w|), "seconds"}``.
    """
    if recal_images < 1:
        raise ValueError(f"recal_images must be >= 1, got {recal_images}")
    t0 = time.perf_counter()
    model = ternarize_model(copy.deepcopy(fp_model), method=method, t=t, sparsity=sparsity, scale_init=scale_init)
    acc_before = accuracy(model, data.test_x, data.test_y, mean, std) if before else None
    recalibrate_bn_on(model, data.train_x, data.train_y, mean, std, recal_images, batch_size, seed=seed)
    acc = accuracy(model, data.test_x, data.test_y, mean, std)
    zero, t_eq = _network_shares(model)
    return {"method": method, "t": t, "sparsity": sparsity, "accuracy": acc, "accuracy_before": acc_before,
            "zero": zero, "t_equiv": t_eq, "seconds": time.perf_counter() - t0}


def accuracy_sweep(fp_model: nn.Module, data, mean, std, ts: Sequence[float] = (), rs: Sequence[float] = (),
                   twn: bool = True, recal_images: int = 1024, progress: Callable[[str], None] | None = None) -> dict:
    """:func:`ternary_point` for every t in ``ts`` (TTQ rule) and every r in ``rs`` (fixed sparsity), plus TWN's
    rule (``0.7 * mean|w|``, one scale) when ``twn``, and the full-precision model's own accuracy.

    Returns ``{"fp": accuracy, "t": [points], "r": [points], "twn": point or None, "test_images",
    "recal_images"}``; ``progress`` is called with a short line after each point.
    """
    with torch.no_grad():
        fp_acc = accuracy(fp_model, data.test_x, data.test_y, mean, std)
    out = {"fp": fp_acc, "t": [], "r": [], "twn": None, "test_images": len(data.test_y), "recal_images": recal_images}
    jobs = [("t", dict(t=float(t))) for t in ts] + [("r", dict(sparsity=float(r))) for r in rs]
    jobs += [("twn", dict(method="twn"))] if twn else []
    for kind, kw in jobs:
        point = ternary_point(fp_model, data, mean, std, recal_images=recal_images, **kw)
        if kind == "twn":
            out["twn"] = point
        else:
            out[kind].append(point)
        if progress is not None:
            label = {"t": f"t = {kw.get('t')}", "r": f"r = {kw.get('sparsity')}", "twn": "TWN"}[kind]
            progress(f"{label}: {point['accuracy']:.1f} % ({point['seconds']:.1f} s)")
    return out
