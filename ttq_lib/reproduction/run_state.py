"""What a run folder of a plan says about its run: finished or not, epochs committed, time per epoch."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..training.config import CONFIG_FILE
from ..training.history import read_history
from .plan import Plan, PlannedRun


@dataclass
class Progress:
    """What one run's folder says about it."""
    status: str               # done, partial, new, waiting, running, failed
    epochs_done: int
    epochs: int
    epoch_s: float | None     # mean wall time of its committed epochs (on one device, when asked)


def run_dir(results: Path, plan: Plan, run: PlannedRun) -> Path:
    return results / plan.name / run.name


def epoch_spans(history: list[dict], device: str | None = None) -> list[tuple[float, int]]:
    """(wall seconds, CPU threads) of each epoch in ``history`` run on ``device`` (all when None)."""
    spans, before = [], 0.0
    for row in history:  # wall_time_s is cumulative over the run's sessions
        if "wall_time_s" not in row:
            continue
        if device is None or row.get("device") == device:
            spans.append((row["wall_time_s"] - before, int(row.get("threads") or 1)))
        before = row["wall_time_s"]
    return spans


def progress(folder: Path, epochs: int, device: str | None = None) -> Progress:
    """The run's status from its files; ``epoch_s`` from the epochs run on ``device`` (a history row's
    "device" label) when given, else from all: a run moved between a CPU and a GPU mid-way must not be
    budgeted on the other machine's speed."""
    history = read_history(folder)
    spans = [s for s, _ in epoch_spans(history, device)]
    epoch_s = sum(spans) / len(spans) if spans else None
    if (folder / "metrics.json").is_file() and len(history) >= epochs:
        return Progress("done", len(history), epochs, epoch_s)
    return Progress("partial" if (folder / CONFIG_FILE).is_file() else "new", len(history), epochs, epoch_s)
