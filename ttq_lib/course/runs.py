"""Reading training runs (``results/<group>/<run>`` or ``runs/...``) for notebooks 03-05.

A run folder holds ``config.json``, ``history.jsonl`` (:mod:`ttq_lib.training.history`), ``last.safetensors``
and, once complete, ``metrics.json``.  This module finds the run the notebooks show, summarises runs against
the paper's CIFAR-10 errors, and rebuilds the "epoch 0" row of a fine-tuning run.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from ..convert import layer_stats
from ..reproduction.paper import PAPER_CIFAR10_ERROR  # defined there once; kept in __all__ for notebook 03
from ..reproduction.table import render_markdown, table_rows
from ..training.config import TrainConfig
from ..training.start_model import build
from ..training.history import read_history, weight_histograms
from .workbook import find_repo_root, resolve_start_checkpoint

__all__ = ["RUN_CANDIDATES", "PAPER_CIFAR10_ERROR", "OFFICIAL_LOG_SCALES", "default_run_dir", "run_summary",
           "results_summary", "run_config", "start_row", "pick_layers", "group_runs", "reproduction_table",
           "gap_curves"]

#: Runs tried, in order, by :func:`default_run_dir`: the CPU TTQ run at the official lr 0.1 (where the scales and
#: shares visibly move), then the one at lr 0.02, each once complete, else the GPU run.
RUN_CANDIDATES = ("results/cpu-resnet20/ttq-lr0.1", "results/cpu-resnet20/ttq",
                  "results/gpu-resnet20/ttq-from-pretrained-10ep")
#: (Wp, Wn) per layer role at the last epoch (400) of the authors' released ResNet-20 training log of the official
#: TensorFlow code: github.com/czhu95/ternarynet, examples/Ternary-Net/train_log/cifar10-resnet-20-finetune.log
#: (layers res1.0/conv1, res3.2/conv2 and linear; e.g. res1.0/conv1/Wp:0: 0.6424, Wn:0: 0.72847), rounded.
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


def run_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The :class:`~ttq_lib.training.TrainConfig` a run was started with, read from its ``config.json``
    (old key names such as ``init`` renamed; keys this version does not know are dropped)."""
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.json")
    return TrainConfig.from_dict(json.loads(path.read_text()), where=str(path), strict=False)


def start_row(run_dir: str | os.PathLike, root: str | os.PathLike | None = None) -> dict | None:
    """The "epoch 0" history row of a fine-tuning run: its starting checkpoint ternarized exactly as the
    run did (``ttq_lib.training.build``), with per-layer stats and latent histograms; None if the starting
    checkpoint is not on this machine or the run trained from scratch."""
    if not (Path(run_dir) / "config.json").is_file():
        return None
    cfg = run_config(run_dir)
    start = resolve_start_checkpoint(cfg.start_from, root)
    if start is None:
        return None
    cfg.start_from = str(start)
    model, _ = build(cfg)
    return {"epoch": 0, "layers": layer_stats(model), "hist": weight_histograms(model)}


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


def group_runs(root: str | os.PathLike | None = None, group: str = "cpu-resnet20") -> list[dict]:
    """:func:`run_summary` of every run in ``results/<group>/``, with its learning rate, schedule, Wp / Wn
    start and seed (a stopped run's ``STOPPED`` file says why it was given up)."""
    root = find_repo_root(root)
    rows = []
    for run in sorted(p.parent for p in (root / "results" / group).glob("*/config.json")):
        cfg = run_config(run)
        rows.append({**run_summary(run, root), "lr": cfg.lr, "schedule": cfg.schedule, "scale_init": cfg.scale_init,
                     "seed": cfg.seed, "recipe": cfg.recipe})
    return rows


def reproduction_table(root: str | os.PathLike | None = None, plan: str = "cifar10",
                       fallback: str = "cpu-resnet20") -> dict:
    """The reproduction table for notebook 03, from whatever ``results/<plan>/`` holds now.

    With at least one finished run there: ``{"source": "results/<plan>", "finished": n, "markdown": ...}``, the
    markdown of :func:`ttq_lib.reproduction.table.render_markdown` (mean +- std over seeds per depth, the
    paper beside it, differences with intervals).  Otherwise ``finished`` is 0, ``markdown`` is None and
    ``fallback_rows`` holds :func:`group_runs` of ``results/<fallback>/`` (the committed single-seed runs).
    """
    root = find_repo_root(root)
    plan_dir = root / "results" / plan
    finished = len(list(plan_dir.glob("*/metrics.json"))) if plan_dir.is_dir() else 0
    if finished:
        return {"source": f"results/{plan}", "finished": finished, "markdown": render_markdown(table_rows(plan_dir)),
                "fallback_rows": None}
    return {"source": f"results/{plan}", "finished": 0, "markdown": None,
            "fallback_rows": group_runs(root, fallback), "fallback": f"results/{fallback}"}


def gap_curves(root: str | os.PathLike | None = None, group: str = "cifar10", model: str = "resnet20",
               methods: Sequence[str] = ("ttq", "twn"), reference: str | None = "adapt"
               ) -> tuple[dict[str, list[dict]], float]:
    """What notebook 03 draws with :func:`ttq_lib.course.evolution_plots.plot_accuracy_gap`: the histories of the
    finished ``methods`` runs of ``model`` in ``results/<group>/`` (labelled "TTQ, seed 0", ...), and the mean final
    test accuracy of its finished full-precision runs of recipe ``reference``, the reference each gap is taken to
    ("adapt": the model the ternary runs start from; "fp": full precision trained with their budget; None: every
    full-precision run, for folders written without recipes).  Two references are never averaged together, and
    the reference runs are not drawn against themselves: ``methods=("fp", "ttq", "twn")`` with the "adapt"
    reference draws the FP control beside TTQ and TWN."""
    root = find_repo_root(root)
    rows = [r for r in group_runs(root, group) if r["model"] == model and r["status"] == "complete"]
    is_reference = lambda r: r["method"] == "fp" and reference in (None, r["recipe"])  # noqa: E731
    fp = [r["test_acc"] for r in rows if is_reference(r)]
    if not fp:
        raise FileNotFoundError(f"results/{group} holds no finished full-precision {model} run"
                                f"{f' of recipe {reference!r}' if reference else ''} to measure gaps to")
    drawn = sorted((r for r in rows if r["method"] in methods and not is_reference(r)),
                   key=lambda r: (methods.index(r["method"]), r["run"]))
    curves = {f"{r['method'].upper()}, seed {r['seed']}": read_history(root / "results" / r["run"]) for r in drawn}
    return curves, sum(fp) / len(fp)
