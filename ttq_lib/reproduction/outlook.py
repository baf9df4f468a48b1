"""What the runner tells its user: before it starts, the runs it will do and how long they should take here; while
it runs, a line per run going and one for the whole plan; as each run ends, its accuracy beside the committed
run's.  Read from the run folders and the progress files the trainings write (:mod:`ttq_lib.training.hooks`).
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

from ..training.config import CONFIG_FILE, EXECUTION_FIELDS, PATH_FIELDS
from ..training.history import read_history
from ..training.hooks import read_progress
from .estimate import ASSUMPTION, EpochTimes, Job, duration, scaled_mean, simulate
from .live import Overall, RunLine
from .run_state import epoch_spans


class Outlook:
    """The runner's estimates and live lines; ``runner`` is a :class:`~ttq_lib.reproduction.runner.Runner`."""

    def __init__(self, runner):
        self.runner = runner
        self.times = EpochTimes(self._own_spans, self._kin_spans, self._config)
        self.base: dict[str, tuple[float, int]] = {}  # each run's planned epoch time and the threads it is for
        self._histories: dict[Path, tuple[float, list]] = {}

    # ----- what the estimate reads

    def _config(self, run):
        r = self.runner
        return dataclasses.replace(r.config(run, check=False), data=r.plan.data or r.data_source())

    def history(self, run) -> list[dict]:
        """The run's history.jsonl, read again only when the file changed (the display polls often)."""
        path = self.runner.folder(run) / "history.jsonl"
        try:
            stamp = path.stat().st_mtime_ns
        except OSError:
            return []
        if self._histories.get(path, (None,))[0] != stamp:
            self._histories[path] = (stamp, read_history(path.parent))
        return self._histories[path][1]

    def _own_spans(self, run) -> list[tuple[float, int]]:
        return epoch_spans(self.history(run), self.runner.device_label)

    def _kin_spans(self, run) -> list[tuple[str, list[tuple[float, int]]]]:
        """Epochs run here by the plan's other runs of the same model and method."""
        method = run.settings.get("method")
        return [(other.name, epoch_spans(self.history(other), self.runner.device_label))
                for other in self.runner.plan.runs
                if other.name != run.name and other.model == run.model and other.settings.get("method") == method]

    def _shared_device(self) -> bool:
        return self.runner.device_label != "cpu"  # a GPU: the runs going share the card

    def _epoch_s(self, name: str):
        seconds, threads = self.base[name]
        return lambda th: seconds * threads / (1 if self._shared_device() else th)

    # ----- before: the plan and its estimate

    def plan_lines(self) -> list[str]:
        """What will run, each run's epoch time and where it comes from, and when the plan should end."""
        r = self.runner
        states = {run.name: r.status(run) for run in r.selected}
        todo = [run for run in r.selected if states[run.name].status != "done"]
        where = f"{r.results / r.plan.name}"
        if not todo:
            return [f"Plan {r.plan.name}: every run asked for is done in {where}"]
        cores = os.cpu_count() or 1
        jobs = [Job(run.name, states[run.name].epochs - states[run.name].epochs_done,
                    lambda th, run=run: self.times(run, th).seconds, run.after, r.startup_s) for run in todo]
        schedule = simulate(jobs, r.jobs, cores, self._shared_device())
        on = f"{r.device_label}, {cores} CPU core(s)" if not self._shared_device() else r.device_label
        lines = [f"Plan {r.plan.name}: {len(todo)} run(s) to do in {where}, at most {r.jobs} at a time, on {on}:"]
        width = max(len(run.name) for run in todo)
        for run in todo:
            p = states[run.name]
            epochs = f"{p.epochs - p.epochs_done} epoch(s)" + (f" ({p.epochs_done} done)" if p.epochs_done else "")
            if run.name not in schedule:
                lines.append(f"  {run.name:{width}s}  {epochs:20s} cannot start: {run.after} is not done")
                continue
            start, end, threads = schedule[run.name]
            took = self.times(run, threads)
            self.base[run.name] = (took.seconds, threads)
            lines.append(f"  {run.name:{width}s}  {epochs:20s} {took.seconds:6.3g} s/epoch ({took.how}); "
                         f"ends after about {duration(end)}")
        ends = [end for _, end, _ in schedule.values()]
        if ends:
            lines.append(f"Estimated time: about {duration(max(ends))} (start-up {r.startup_s:.0f} s per run; "
                         f"{ASSUMPTION}).")
        if r.budget_s is not None and ends:
            fit = sum(end <= r.budget_s - r.margin_s for end in ends)
            lines.append(f"The budget ({r.budget_s / 60:g} min) should see {fit} of the {len(ends)} run(s) end; "
                         "call the same command again to continue the rest.")
        return lines

    # ----- while it runs

    def live(self, progress_file) -> tuple[list[RunLine], Overall]:
        """A line per run going and the overall line; ``progress_file(name)`` is a run's progress file."""
        r, now = self.runner, time.time()
        lines, jobs = [], []
        states = {run.name: r.status(run) for run in r.selected}
        for name in r.procs:
            run = r.plan.run(name)
            line, threads = self._line(run, states[name].epochs, read_progress(progress_file(name)), now)
            lines.append(line)
            if name in self.base and line.left_s is not None:
                per_epoch = self._epoch_s(name)(threads)
                jobs.append(Job(name, line.left_s / per_epoch, self._epoch_s(name), running_threads=threads))
        waiting: dict[str, int] = {}
        for run in r.selected:
            p = states[run.name]
            if p.status == "waiting":
                waiting[run.after] = waiting.get(run.after, 0) + 1
            if run.name not in r.procs and p.status not in ("done", "failed") and run.name in self.base:
                jobs.append(Job(run.name, p.epochs - p.epochs_done, self._epoch_s(run.name), run.after, r.startup_s))
        known = len(jobs) == sum(states[run.name].status not in ("done", "failed") for run in r.selected)
        schedule = simulate(jobs, r.jobs, os.cpu_count() or 1, self._shared_device()) if known else {}
        left = max((end for _, end, _ in schedule.values()), default=0.0) if known else None
        done = sum(p.status == "done" for p in states.values())
        waits = ", ".join(f"{k} run(s) wait for {after}" for after, k in waiting.items())
        return lines, Overall(done, len(r.selected), left, waits)

    def _line(self, run, epochs: int, progress: dict | None, now: float) -> tuple[RunLine, int]:
        history = self.history(run)
        done = len(history)
        last = history[-1] if history else {}
        split = last.get("eval_split", "test")
        acc = last.get(f"{split}_acc")
        threads = self.runner._threads.get(run.name, 1)
        if progress is None or progress.get("epoch", 0) <= done:  # loading, or between two epochs
            phase, step, steps = ("start" if progress is None else "train"), 0, (progress or {}).get("steps", 0)
        else:
            phase, step, steps = progress["phase"], progress["step"], progress["steps"]
            threads = progress.get("threads", threads)
        own = scaled_mean(epoch_spans(history, self.runner.device_label), threads)
        epoch_s = own if own is not None else self._epoch_s(run.name)(threads) if run.name in self.base else None
        left = None
        if epoch_s is not None:
            frac = 1.0 if phase == "eval" else step / steps if steps else 0.0
            current = epoch_s * (1 - frac)
            if phase == "train" and frac >= 0.1:  # the epoch's own pace: it follows the machine's load
                current = (now - progress["epoch_started"]) * (1 - frac) / frac
            left = current + max(0, epochs - done - 1) * epoch_s
            if phase == "start":  # importing torch, loading the data and the model
                left += max(0.0, self.runner.startup_s - (now - self.runner.started.get(run.name, now)))
        return RunLine(run.name, min(done + 1, epochs), epochs, step, steps, phase, acc, split, left), threads

    # ----- after: each run's result beside the committed one

    def finish_line(self, run, committed_root: Path | None) -> str:
        folder = self.runner.folder(run)
        metrics = json.loads((folder / "metrics.json").read_text())
        split = metrics.get("eval_split", "test")
        acc = metrics.get(f"{split}_accuracy")
        line = f"{run.name}: done, {split} accuracy {acc:.2f} % after {metrics['epochs']} epochs"
        twin = committed_twin(folder, committed_root / self.runner.plan.name / run.name) if committed_root else None
        if twin is not None:
            line += f"; the committed run (same plan, data and seed): {twin[f'{split}_accuracy']:.2f} %"
        return line


def committed_twin(folder: Path, committed: Path) -> dict | None:
    """The metrics of the committed run ``committed`` when it is the same run as ``folder``'s: the same recipe
    (config.json less execution settings and paths), seed and test data (its hash); else None."""
    try:
        if committed.resolve() == folder.resolve():
            return None
        mine, theirs = (json.loads((f / "metrics.json").read_text()) for f in (folder, committed))
        configs = [json.loads((f / CONFIG_FILE).read_text()) for f in (folder, committed)]
    except (OSError, ValueError):
        return None
    skip = set(EXECUTION_FIELDS) | set(PATH_FIELDS)
    same_recipe = ({k: v for k, v in configs[0].items() if k not in skip}
                   == {k: v for k, v in configs[1].items() if k not in skip})
    same_data = mine.get("data_test_sha256") is not None and mine.get("data_test_sha256") == theirs.get(
        "data_test_sha256") and mine.get("eval_split") == theirs.get("eval_split")
    return theirs if same_recipe and same_data and mine.get("seed") == theirs.get("seed") else None
