"""Reading training runs (``results/<group>/<run>`` or ``runs/...``) for notebooks 03-05.

A run folder holds ``config.json``, ``history.jsonl`` (one row per epoch, written by ``ttq_lib.train``:
losses, accuracies, and each ternary layer's Wp, Wn, threshold and shares of negative / zero / positive
weights, the quantities of the paper's Fig. 3), ``last.safetensors`` and, once complete, ``metrics.json``.
This module summarises runs against the paper's CIFAR-10 errors, rebuilds the "epoch 0" row of a
fine-tuning run, and pulls per-layer series out of a history for the plots in :mod:`ttq_lib.plots`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from .convert import layer_stats
from .train import TrainConfig, build, read_history, weight_histograms
from .workbook import find_repo_root, resolve_init

__all__ = ["RUN_CANDIDATES", "PAPER_CIFAR10_ERROR", "OFFICIAL_LOG_SCALES", "read_history", "default_run_dir",
           "run_summary", "results_summary", "start_row", "layer_series", "layer_names", "network_shares",
           "pick_layers"]

#: Runs tried, in order, by :func:`default_run_dir`: the CPU reproduction once it is complete, else the GPU run.
RUN_CANDIDATES = ("results/cpu-resnet20/ttq", "results/gpu-resnet20/ttq-from-pretrained-10ep")
#: CIFAR-10 test error (%) reported by the authors (README of the official code and the abstract).
PAPER_CIFAR10_ERROR = {
    "resnet20": {"fp": 8.23, "ttq": 8.87},
    "resnet32": {"fp": 7.67, "ttq": 7.63},
    "resnet44": {"fp": 7.18, "ttq": 7.02},
    "resnet56": {"fp": 6.80, "ttq": 6.44},
}
#: Last values of the official ResNet-20 training log (TTQ_NOTES): (Wp, Wn) per layer role.
OFFICIAL_LOG_SCALES = {"first residual conv": (0.64, 0.73), "last conv": (1.70, 1.73), "linear": (2.25, 1.95)}


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def default_run_dir(root: str | os.PathLike | None = None) -> Path:
    """The committed TTQ run the notebooks show: the first of :data:`RUN_CANDIDATES` that is complete
    (has ``metrics.json``), else the first with a checkpoint and at least one history row."""
    root = find_repo_root(root)
    runs = [root / c for c in RUN_CANDIDATES]
    for run in runs:
        if (run / "metrics.json").is_file() and (run / "last.safetensors").is_file():
            return run
    for run in runs:
        if (run / "last.safetensors").is_file() and read_history(run):
            return run
    raise FileNotFoundError(f"none of {list(RUN_CANDIDATES)} holds a TTQ run under {root}")


def run_summary(run_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> dict:
    """One run in a few numbers: method, epochs done / planned, final test accuracy and error, status.

    A run without ``metrics.json`` is reported from its last history row with status "in progress"
    (or "not started" without any row), or "stopped" when a ``STOPPED`` file in the run folder says why it
    was given up; ``paper_error`` is the paper's number for that model and method.
    """
    run = Path(run_dir)
    config = _read_json(run / "config.json") or {}
    metrics = _read_json(run / "metrics.json")
    history = read_history(run)
    try:
        name = str(run.resolve().relative_to(find_repo_root(root) / "results"))
    except (ValueError, FileNotFoundError):
        name = run.name
    model = (metrics or config).get("model", "resnet20")
    method = (metrics or config).get("method", "?")
    if metrics is not None:
        acc, status = metrics.get("test_accuracy"), "complete"
    elif history:
        acc = history[-1]["test_acc"]
        status = "stopped" if (run / "STOPPED").is_file() else "in progress"
    else:
        acc, status = None, "not started"
    return {
        "run": name, "model": model, "method": method, "epochs_done": len(history),
        "epochs_planned": config.get("epochs", len(history)), "test_acc": acc,
        "test_error": None if acc is None else 100.0 - acc, "status": status,
        "device": (metrics or {}).get("device", "cuda" if "gpu" in name else "cpu"),
        "paper_error": PAPER_CIFAR10_ERROR.get(model, {}).get(method),
    }


def results_summary(root: str | os.PathLike | None = None) -> list[dict]:
    """:func:`run_summary` of every run under ``results/<group>/<run>`` (those with a ``config.json``)."""
    root = find_repo_root(root)
    runs = sorted(p.parent for p in (root / "results").glob("*/*/config.json"))
    return [run_summary(r, root) for r in runs]


def start_row(run_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> dict | None:
    """The "epoch 0" history row of a fine-tuning run: its starting checkpoint ternarized exactly as the
    run did (``ttq_lib.train.build``), with per-layer stats and latent histograms; None if the starting
    checkpoint is not on this machine or the run trained from scratch."""
    config = _read_json(Path(run_dir) / "config.json")
    if not config:
        return None
    init = resolve_init(config.get("init"), root)
    if init is None:
        return None
    known = TrainConfig.__dataclass_fields__
    cfg = TrainConfig(**{k: v for k, v in config.items() if k in known})
    cfg.init = str(init)
    model, _ = build(cfg)
    return {"epoch": 0, "layers": layer_stats(model), "hist": weight_histograms(model)}


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


def network_shares(row: dict) -> dict[str, float]:
    """Shares of negative / zero / positive weights over all ternary layers of one history row
    (each layer weighted by its number of weights)."""
    total = sum(item["numel"] for item in row["layers"])
    return {k: sum(item[k] * item["numel"] for item in row["layers"]) / total for k in ("neg", "zero", "pos")}


def pick_layers(names: Sequence[str]) -> dict[str, str]:
    """Layers the paper's evolution figure follows: the first residual conv, one in the middle, the last
    conv and, if it is ternary, the linear layer; maps a role to the layer name."""
    convs = [n for n in names if "conv" in n]
    out = {}
    if convs:
        out["first residual conv"] = convs[0]
        out["middle conv"] = convs[len(convs) // 2]
        out["last conv"] = convs[-1]
    out.update({"linear": n for n in names if "linear" in n})
    return out
