"""A run's ``history.jsonl``: one row per epoch with losses, accuracies and, per ternary layer, Wp, Wn, the
threshold, the shares of negative / zero / positive weights and a histogram of the latent weights (the
quantities of the paper's Fig. 3).  Written by :mod:`ttq_lib.training.loop`, read by notebooks and plots.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

import torch
import torch.nn as nn

from ..convert import ternary_layers

HIST_BINS = 64
#: How a row's epoch ran, not what it computed: ``wall_time_s`` (seconds since the run began, summed over its
#: sessions), this epoch's ``train_time_s`` (its steps, data and augmentation included, up to the loss read
#: that waits for them) and ``eval_time_s`` (the evaluation after them), and the CPU ``threads`` it ran on.
#: An interrupted and resumed run repeats every other value of a row exactly.
EXECUTION_KEYS = ("wall_time_s", "train_time_s", "eval_time_s", "threads")


def without_execution(row: dict) -> dict:
    """``row`` less its :data:`EXECUTION_KEYS`: what an interrupted and resumed run must repeat exactly."""
    return {k: v for k, v in row.items() if k not in EXECUTION_KEYS}


@torch.no_grad()
def weight_histograms(model: nn.Module, bins: int = HIST_BINS) -> dict:
    """Histogram of each ternary layer's latent weights divided by max|w| (so +-t marks the threshold)."""
    out = {}
    for name, m in ternary_layers(model):
        w = m.weight.detach().float().flatten()
        w = w / w.abs().max().clamp_min(1e-12)
        out[name] = torch.histc(w, bins=bins, min=-1.0, max=1.0).int().tolist()
    return out


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's ``history.jsonl`` (one per finished epoch); [] if there is none yet."""
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def network_shares(row: dict) -> dict[str, float]:
    """Shares of negative / zero / positive weights over all ternary layers of one history row
    (each layer weighted by its number of weights)."""
    total = sum(item["numel"] for item in row["layers"])
    return {k: sum(item[k] * item["numel"] for item in row["layers"]) / total for k in ("neg", "zero", "pos")}


def layer_series(history: Sequence[dict], layer: str, key: str) -> tuple[list[int], list[float]]:
    """(epochs, values) of one per-layer quantity (wp, wn, neg, zero, pos, threshold) across a history.

    ``layer="*"`` gives the whole network's neg / zero / pos shares (:func:`network_shares`).
    """
    xs, ys = [], []
    for row in history:
        if layer == "*":
            xs.append(row["epoch"])
            ys.append(network_shares(row)[key])
            continue
        for item in row.get("layers", []):
            if item["name"] == layer:
                xs.append(row["epoch"])
                ys.append(item[key])
    return xs, ys


def layer_names(history: Sequence[dict]) -> list[str]:
    """The ternary layers recorded in a history, in model order."""
    return [item["name"] for item in history[-1]["layers"]] if history else []
