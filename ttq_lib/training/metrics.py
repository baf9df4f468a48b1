"""A run's ``metrics.json``: its result and provenance, written once its last epoch is committed."""
from __future__ import annotations

from pathlib import Path

from ..data.inputs import input_origin
from ..formats import write_json_atomic
from .config import TrainConfig
from .provenance import command_line, repo_root


def write_metrics(cfg: TrainConfig, task, history: list[dict], last_path: Path, channels_last: bool,
                  origin: dict) -> dict:
    """metrics.json beside ``last_path``: the last epoch's accuracies, the best, what the task adds (images,
    data, classes), the command, the inputs' origins and the code's provenance ``origin``."""
    final = history[-1] if history else {}
    root = repo_root(last_path.parent)  # the repository the run is written into, wherever the command started
    ckpt = str(last_path.resolve().relative_to(root) if root else last_path.resolve())
    best = max((r["test_acc"] for r in history if r.get("test_acc") is not None), default=None)
    added = task.metrics(history)
    metrics = {
        "model": cfg.model, "method": cfg.method, "recipe": cfg.recipe or cfg.method, "seed": cfg.seed,
        "epochs": cfg.epochs, "eval_split": task.split,
        "test_accuracy": final.get("test_acc"), "best_test_accuracy": best, **added["evaluated"],
        "checkpoint": ckpt, "command": command_line(), "start_from": cfg.start_from,
        **({"start_from_origin": input_origin(cfg.start_from)} if cfg.start_from else {}), "data": task.source,
        **added["images"], "wall_time_s": final.get("wall_time_s"), "device": str(task.info.device),
        "channels_last": channels_last, "precision": cfg.precision, **origin,
    }
    write_json_atomic(last_path.parent / "metrics.json", metrics)
    return metrics
