"""Notebook 06: baselines and layer sensitivity on one trained network, without training.

Every variant is a copy of the trained full-precision model whose conv / linear weights are replaced by
their quantized values (:func:`ttq_lib.baselines.fake_quantize`), followed by batch-norm recalibration
(:func:`ttq_lib.training.recalibrate_bn`: quantizing changes each layer's output scale, and the stored running
statistics no longer fit; see notebook 03) and a test accuracy.  All variants are scored on the same images,
so their differences are paired.

* :func:`scheme_points`: accuracy against bits per weight for FP, INT8, INT4, TTQ's rule, TWN and binary
  weights (the Pareto plot), with :func:`finetuned_points` for the committed fine-tuned runs.
* :func:`layer_sensitivity`: one layer quantized at a time ("alone"), or every layer but one ("kept").
* :func:`first_last_cost`: what quantizing the first conv and the last linear layer too costs.

Bits per weight (:func:`bits_per_weight`): the stored bits of all conv and linear weights of the model,
quantized or not, with their scales (:func:`ttq_lib.baselines.storage_bits`), divided by their number.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..baselines import check_weight_scheme, fake_quantize, storage_bits
from ..convert import ternary_layers
from ..formats.loading import load_model
from ..training.bn_recalibration import recalibrate_bn_on
from ..training.evaluate import accuracy
from .runs import run_summary
from .workbook import find_repo_root

__all__ = ["SCHEME_LABELS", "FINETUNED_RUNS", "EvalSet", "weight_layers", "default_layers", "quantize_layers",
           "bits_per_weight", "scheme_points", "finetuned_points", "layer_sensitivity", "first_last_cost"]

SCHEME_LABELS = {"fp": "full precision", "int8": "INT8 per channel", "int4": "INT4 per channel",
                 "ttq": "ternary, TTQ rule (t = 0.05, region means)", "twn": "ternary, TWN rule",
                 "binary": "binary, mean |w| scale"}
#: The committed fine-tuned ResNet-20 runs (12 epochs from ``results/cpu-resnet20/fp``): run -> label.
FINETUNED_RUNS = {"cpu-resnet20/ttq-lr0.1": "TTQ fine-tuned (lr 0.1)", "cpu-resnet20/ttq": "TTQ fine-tuned (lr 0.02)",
                  "cpu-resnet20/twn": "TWN fine-tuned (lr 0.02)"}


@dataclass
class EvalSet:
    """Images to recalibrate batch norm on (training split, augmented as in training) and to test on, with the
    normalisation the model expects.  ``score`` gives a model's test accuracy in percent."""

    calib_x: torch.Tensor
    calib_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    mean: Sequence[float]
    std: Sequence[float]

    @classmethod
    def from_data(cls, data, n_test: int | None, n_calib: int, mean, std, seed: int = 0) -> "EvalSet":
        """A stratified, seeded pick from a :class:`~ttq_lib.data.CifarTensors` (``n_test=None``: all test images)."""
        if n_calib < 1:
            raise ValueError(f"n_calib must be >= 1 (images to re-estimate batch norm on), got {n_calib}")
        sub = data.subset(n_calib, n_test, seed=seed)
        return cls(sub.train_x, sub.train_y, sub.test_x, sub.test_y, mean, std)

    def recalibrate(self, model: nn.Module) -> nn.Module:
        return recalibrate_bn_on(model, self.calib_x, self.calib_y, self.mean, self.std, len(self.calib_x),
                                 shuffle=False)

    def score(self, model: nn.Module, recalibrate: bool = True) -> float:
        if recalibrate:
            self.recalibrate(model)
        return accuracy(model, self.test_x, self.test_y, self.mean, self.std, batch_size=250)


def weight_layers(model: nn.Module) -> list[str]:
    """Names of the plain ``nn.Conv2d`` and ``nn.Linear`` layers, in model order (the quantizable ones)."""
    return [n for n, m in model.named_modules() if type(m) in (nn.Conv2d, nn.Linear)]


def default_layers(model: nn.Module, keep_first: bool = True, keep_last: bool = True) -> list[str]:
    """The layers TTQ quantizes by default: all but the first conv and the last linear layer (TTQ paper, Sec. 4)."""
    names = weight_layers(model)
    convs = [n for n in names if isinstance(model.get_submodule(n), nn.Conv2d)]
    linears = [n for n in names if isinstance(model.get_submodule(n), nn.Linear)]
    drop = ({convs[0]} if keep_first and convs else set()) | ({linears[-1]} if keep_last and linears else set())
    return [n for n in names if n not in drop]


def quantize_layers(model: nn.Module, assignment: dict[str, str]) -> nn.Module:
    """A deep copy of ``model`` with the weight of each named layer replaced by ``fake_quantize(w, scheme)``."""
    known = set(weight_layers(model))
    unknown = sorted(set(assignment) - known)
    if unknown:
        raise ValueError(f"no conv / linear layer named {', '.join(unknown)}; the model's are: {', '.join(sorted(known))}")
    out = copy.deepcopy(model)
    with torch.no_grad():
        for name, scheme in assignment.items():
            layer = out.get_submodule(name)
            layer.weight.copy_(fake_quantize(layer.weight, check_weight_scheme(scheme)))
    return out


def bits_per_weight(model: nn.Module, assignment: dict[str, str], ternary_bits: float = 2.0) -> float:
    """Stored bits of all conv / linear weights divided by their number; layers not in ``assignment`` count
    as fp32.  A model with trainable ternary layers (a loaded TTQ / TWN checkpoint) counts those by their method."""
    sizes = {n: m.weight.shape for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    schemes = {n: m.method for n, m in ternary_layers(model)} | dict(assignment)
    total = sum(storage_bits(schemes.get(n, "fp"), s, ternary_bits) for n, s in sizes.items())
    return total / sum(torch.Size(s).numel() for s in sizes.values())


def _point(model: nn.Module, evalset: EvalSet, assignment: dict[str, str], ternary_bits: float,
           before: bool = True) -> dict:
    q = quantize_layers(model, assignment)
    row = {"bits": bits_per_weight(model, assignment, ternary_bits)}
    if before:
        row["acc_no_recal"] = evalset.score(q, recalibrate=False)
    # Full precision is recalibrated too: on another copy of the data (the JPEG one) new statistics alone can
    # move its accuracy, and every variant should get the same treatment.
    return {**row, "acc": evalset.score(q)}


def scheme_points(model: nn.Module, evalset: EvalSet, schemes: Sequence[str] = tuple(SCHEME_LABELS),
                  keep_first: bool = True, keep_last: bool = True, ternary_bits: float = 2.0) -> list[dict]:
    """One row per scheme applied to the default layers without training: ``scheme``, ``label``, ``bits``
    (per weight, whole model), ``acc_no_recal`` and ``acc`` (after batch-norm recalibration, "fp" included)."""
    layers = default_layers(model, keep_first, keep_last)
    rows = []
    for s in schemes:
        assignment = {} if s == "fp" else {n: s for n in layers}
        rows.append({"scheme": s, "label": SCHEME_LABELS.get(s, s), **_point(model, evalset, assignment, ternary_bits)})
    return rows


def finetuned_points(root: str | os.PathLike | None = None, runs: dict[str, str] | None = None,
                     ternary_bits: float = 2.0) -> list[dict]:
    """The committed fine-tuned runs (``results/<run>``) that are complete: ``run``, ``label``, ``method``,
    ``bits`` (counted from the run's checkpoint) and ``acc``, the test accuracy in its ``metrics.json``
    (all 10,000 test images)."""
    root = find_repo_root(root)
    rows = []
    for run, label in (FINETUNED_RUNS if runs is None else runs).items():
        folder = Path(root) / "results" / run
        summary = run_summary(folder, root) if (folder / "config.json").is_file() else None
        if summary is None or summary["status"] != "complete":
            continue
        model, _ = load_model(folder / "last.safetensors")
        rows.append({"run": run, "label": label, "method": summary["method"],
                     "bits": bits_per_weight(model, {}, ternary_bits), "acc": summary["test_acc"]})
    return rows


def layer_sensitivity(model: nn.Module, evalset: EvalSet, scheme: str = "ttq", mode: str = "alone",
                      layers: Sequence[str] | None = None) -> list[dict]:
    """Per layer (default: the default quantized layers): ``layer``, ``numel`` and ``acc`` after recalibration,
    with only that layer quantized (``mode="alone"``) or every default layer but that one (``mode="kept"``)."""
    if mode not in ("alone", "kept"):
        raise ValueError(f"mode must be 'alone' (one layer quantized) or 'kept' (one layer kept in full precision), got {mode!r}")
    check_weight_scheme(scheme)
    everything = default_layers(model)
    rows = []
    for name in everything if layers is None else layers:
        chosen = [name] if mode == "alone" else [n for n in everything if n != name]
        q = quantize_layers(model, {n: scheme for n in chosen})
        rows.append({"layer": name, "numel": model.get_submodule(name).weight.numel(), "acc": evalset.score(q)})
    return rows


def first_last_cost(model: nn.Module, evalset: EvalSet, scheme: str = "ttq", ternary_bits: float = 2.0) -> list[dict]:
    """Accuracy and bits per weight with the first conv and / or the last linear layer quantized too."""
    rows = []
    for label, first, last in (("first and last in full precision (paper)", True, True),
                               ("first conv quantized too", False, True), ("last linear quantized too", True, False),
                               ("every layer quantized", False, False)):
        assignment = {n: scheme for n in default_layers(model, first, last)}
        rows.append({"label": label, **_point(model, evalset, assignment, ternary_bits, before=False)})
    return rows
