"""Run a plan: what is unfinished, N trainings at once, within a time budget, resumable by any later call.

Every run lives in ``results/<plan>/<run>/``.  The runner writes the run's ``config.json`` first and then always
starts ``ttq train --resume <run>`` in a child process (logging to ``<run>/train.log``): a run that never
committed an epoch starts from epoch 0, any other continues from its last committed epoch.  So the state of a
plan is nothing but its run folders, and a 9-minute GPU call, a second one, or a CPU session later all pick up
where the previous stopped.

Time budget: no run is started that could not finish one epoch before the budget ends; a run whose next epoch
would not fit is stopped right after it commits an epoch; at the budget's end, less a safety margin, every
run still going is stopped (it loses at most its uncommitted epoch).  CPU threads are split between the runs
going at once (``OMP_NUM_THREADS`` at the start): a run started while fewer than ``jobs`` runs can go (the
adaptation run every other run waits for) gets the cores of the idle slots too, and when a run ends with
nothing to take its place, the runs still going share its cores from their next epoch
(:mod:`ttq_lib.training.hooks`).  On a GPU the jobs share the card.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..data.inputs import InputUnavailable, checkout, resolve_data
from ..data.sources import fetch_cifar10
from ..formats import write_text_atomic
from ..training.config import CONFIG_FILE, EXECUTION_FIELDS, TrainConfig, load_config, save_config
from ..training.history import read_history
from .children import die_with_runner, interrupt_as_ctrl_c, prctl
from .estimate import cpu_share
from .outlook import Outlook
from .plan import Plan, PlannedRun
from .plan_lock import PlanLock, other_runner
from .run_state import Progress, epoch_spans, progress, run_dir

def _comparable(cfg: TrainConfig) -> dict:
    values = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in EXECUTION_FIELDS}
    for key in ("start_from", "data"):
        if values[key] and Path(values[key]).exists():
            values[key] = str(Path(values[key]).resolve())
    return values


class Runner:
    """Runs a plan's unfinished runs; see the module docstring.  ``log`` receives one line per event (the plan
    and its time estimate first); ``display`` (:mod:`ttq_lib.reproduction.live`), if given, is updated at every
    poll.  A finished run's line names the accuracy of the same run in ``committed`` (default: the checkout's
    ``results/``) when it has the same recipe, data and seed."""

    def __init__(self, plan: Plan, results: str | os.PathLike = "results", jobs: int = 1,
                 budget_s: float | None = None, only: list[str] | None = None, margin_s: float | None = None,
                 device: str = "auto", log=print, poll_s: float = 0.5, startup_s: float = 20.0, display=None,
                 committed: str | os.PathLike | None = None):
        if jobs < 1:
            raise ValueError(f"--jobs {jobs} must be at least 1")
        if budget_s is not None and not budget_s > 0:
            raise ValueError(f"--budget-min must be positive, got {budget_s / 60:g}")
        # Stopping a run takes a few seconds (SIGTERM, then SIGKILL after 15 s at worst).
        margin_s = min(20.0, 0.25 * budget_s) if margin_s is None and budget_s else (margin_s or 0.0)
        self.plan, self.results, self.jobs = plan, Path(results), jobs
        self.budget_s, self.margin_s, self.device, self.log, self.poll_s = budget_s, margin_s, device, log, poll_s
        self.startup_s = startup_s  # importing torch and loading the data, before the first epoch starts
        self.selected = self._select(only)
        self.procs: dict[str, subprocess.Popen] = {}
        self.failed: dict[str, str] = {}
        self.stopped: set[str] = set()
        self._committed: dict[str, int] = {}
        self._holding = False  # this runner holds the plan's lock (see plan_lock)
        self._unfit: set[str] = set()  # runs said not to fit in the budget (said once)
        self._label: str | None = None
        self._threads: dict[str, int] = {}  # the CPU threads each run going was last asked to use
        self._hints: Path | None = None  # a temporary folder of their thread files, made at the first start
        self._data: str | None = None  # the data source, resolved at the first start (see data())
        self.display = display
        self.started: dict[str, float] = {}  # when each run going was started (its start-up is not in its epochs)
        root = checkout()
        self.committed = Path(committed) if committed is not None else root / "results" if root else None
        self.outlook = Outlook(self)

    @property
    def device_label(self) -> str:
        """This machine's label for the runs' device, as history rows record it (epoch-time estimates)."""
        if self._label is None:
            from ..training.devices import device_label, resolve_device
            self._label = device_label(resolve_device(self.device))
        return self._label

    def _select(self, only: list[str] | None) -> list[PlannedRun]:
        if not only:
            return list(self.plan.runs)
        chosen = {r.name for r in self.plan.runs if any(fnmatch.fnmatch(r.name, p) for p in only)}
        if not chosen:
            raise ValueError(f"--only {' '.join(only)} matches no run of plan {self.plan.name}; runs are named "
                             f"like {self.plan.runs[0].name}")
        for name in sorted(chosen):  # what a chosen run starts from must run too
            after = self.plan.run(name).after
            while after:
                chosen.add(after)
                after = self.plan.run(after).after
        return [r for r in self.plan.runs if r.name in chosen]

    # ----- state

    def folder(self, run: PlannedRun) -> Path:
        return run_dir(self.results, self.plan, run)

    def status(self, run: PlannedRun, elsewhere: frozenset = frozenset()) -> Progress:
        p = progress(self.folder(run), self.config(run, check=False).epochs, self.device_label)
        if run.name in self.procs or run.name in elsewhere:
            p.status = "running"
        elif run.name in self.failed:
            p.status = "failed"
        elif p.status != "done" and run.after and progress(self.folder(self.plan.run(run.after)), 1).status != "done":
            p.status = "waiting"
        return p

    def data(self) -> str:
        """The plan's data source: its ``data`` (or ``--data``), else the input resolver's answer; a download
        happens here, once, before any training starts (not in every training at once)."""
        if self._data is None:
            found = fetch_cifar10(self.plan.data)
            self.log(f"data: {found}")
            self._data = found.value
        return self._data

    def data_source(self) -> str | None:
        """The data source as far as it is known without a download (for estimates and ``--dry-run``)."""
        if self._data is None and self.plan.data:
            return self.plan.data
        try:
            return self._data or resolve_data(None, download=False).value
        except InputUnavailable:
            return None

    def config(self, run: PlannedRun, check: bool = True) -> TrainConfig:
        """The run's TrainConfig; with ``check``, also that an existing config.json still matches the plan.

        Inputs the plan leaves to the resolver (no ``data``, no ``pretrained`` pattern) are those the run recorded
        when it started: a run keeps its data and its starting model wherever it is continued."""
        existing = self.folder(run) / CONFIG_FILE
        recorded = load_config(self.folder(run)) if check and existing.is_file() else None
        start, data = run.start_from, None
        if run.after:
            start = str(self.folder(self.plan.run(run.after)) / "last.safetensors")
        if check:  # inputs: the plan's own, else those the run recorded, else the resolver's
            if run.start_from == "pretrained":
                start = recorded.start_from if recorded is not None and not self.plan.pretrained \
                    else self.plan.pretrained_file(run.model)
            data = recorded.data if recorded is not None and not self.plan.data else self.data()
        elif run.start_from == "pretrained":
            start = None
        cfg = run.config(self.folder(run), data, start)
        cfg.device = self.device
        cfg.validate()
        if recorded is not None:
            saved = _comparable(recorded)
            wanted = _comparable(cfg)
            changed = sorted(k for k in wanted if saved.get(k) != wanted[k])
            if changed:
                raise ValueError(f"{self.folder(run)} was started with other settings than the plan now gives "
                                 f"({', '.join(f'{k}: {saved.get(k)!r} -> {wanted[k]!r}' for k in changed)}); "
                                 "restore the plan, or delete that run folder to run it again")
        return cfg

    def report(self) -> list[str]:
        """One line per selected run: done, running, epoch k/n, queued, waiting, failed."""
        lines = []
        width = max(len(run.name) for run in self.selected)  # search runs have long names
        other = None if self._holding else other_runner(self.results / self.plan.name)
        elsewhere = frozenset(other["running"]) if other else frozenset()
        if other:
            lines.append(f"(another `ttq reproduce`, process {other['pid']}, is running this plan)")
        for run in self.selected:
            p = self.status(run, elsewhere)
            what = {"done": "done", "running": "running", "failed": "FAILED", "waiting": f"waiting for {run.after}",
                    "new": "queued", "partial": "stopped"}[p.status]
            eta = f", {p.epoch_s:.0f} s/epoch" if p.epoch_s else ""
            lines.append(f"{run.name:{width}s}  {what:24s} epoch {p.epochs_done}/{p.epochs}{eta}")
        return lines

    # ----- running

    def _start(self, run: PlannedRun, threads: int) -> None:
        folder = self.folder(run)
        cfg = self.config(run)
        if not (folder / CONFIG_FILE).is_file():
            folder.mkdir(parents=True, exist_ok=True)
            save_config(cfg, folder)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
        hint = self._ask(run.name, threads)
        self.progress_file(run.name).unlink(missing_ok=True)
        parent, call = os.getpid(), prctl()
        with open(folder / "train.log", "ab") as log:
            self.procs[run.name] = subprocess.Popen(
                [sys.executable, "-m", "ttq_lib.cli", "train", "--resume", str(folder), "--threads-file", str(hint),
                 "--progress-file", str(self.progress_file(run.name))],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                preexec_fn=None if call is None else lambda: die_with_runner(parent, call))
        self._committed[run.name] = progress(folder, cfg.epochs).epochs_done
        self.started[run.name] = time.time()
        self.log(f"{run.name}: started ({threads} CPU thread(s), log {folder / 'train.log'})")

    def _channel(self) -> Path:
        """The temporary folder of the files this runner shares with its trainings (threads, progress)."""
        if self._hints is None:
            self._hints = Path(tempfile.mkdtemp(prefix="ttq-runner-"))
        return self._hints

    def progress_file(self, name: str) -> Path:
        return self._channel() / f"{name}.progress.json"

    def _ask(self, name: str, threads: int) -> Path:
        """Write the thread count ``name`` is to use into its thread file (atomically); the file's path."""
        self._threads[name] = threads
        write_text_atomic(self._channel() / f"{name}.threads", f"{threads}\n")
        return self._channel() / f"{name}.threads"

    def _rebalance(self, going: list[str], share: int) -> None:
        """Give each run in ``going`` the cores' current ``share`` (the one new starts get): the cores of a run
        that ended with nothing to take its place go to the others, each from its next epoch."""
        for name in going:
            if self._threads.get(name) != share:
                self._ask(name, share)
                self.log(f"{name}: {share} CPU thread(s) from its next epoch")

    def _stop(self, name: str, why: str) -> None:
        proc = self.procs[name]
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self.stopped.add(name)
        del self.procs[name]
        self.log(f"{name}: stopped ({why}); the next call continues it")

    def _runnable(self, deadline: float | None) -> list[PlannedRun]:
        out = []
        for run in self.selected:
            if run.name in self.procs or run.name in self.failed or run.name in self.stopped:
                continue
            p = self.status(run)
            if p.status not in ("new", "partial"):
                continue
            # start-up plus one epoch must fit, or the start is wasted
            epoch_s, source = p.epoch_s, ""
            if epoch_s is None and deadline is not None:
                epoch_s, source = self._estimate(run), f", from the plan's other {run.model} runs here"
            need = self.startup_s + (epoch_s or 0.0)
            if deadline is not None and time.time() + need > deadline:
                if run.name not in self._unfit:
                    self._unfit.add(run.name)
                    self.log(f"{run.name}: not started: start-up and one epoch (about {need:.0f} s on "
                             f"{self.device_label}{source}) would not fit in the "
                             f"{max(0.0, deadline - time.time()):.0f} s left of the budget")
                continue
            out.append(run)
        return out

    def _cpu_share(self, wanting: int) -> int:
        """CPU threads each run gets when ``wanting`` runs want to go: the cores split among at most ``jobs``."""
        return cpu_share(os.cpu_count() or 1, self.jobs, wanting)

    def _estimate(self, run: PlannedRun) -> float | None:
        """An optimistic epoch time for a run with none measured here, from the plan's other runs of the same
        model on this device: the fastest epoch among those run on the threads a start can get now (the most:
        the cores of the idle slots too) and of the run's own method, preferring the thread count over the
        method; from another thread count, scaled as if time went down with 1/threads and never up.  A start is
        refused only when even that cannot fit (without it a run with no history needed start-up alone)."""
        threads = self._cpu_share(len(self.procs) + 1)
        seen = [((used == threads, other.settings.get("method") == run.settings.get("method")),
                 span * min(1.0, used / threads))
                for other in self.plan.runs if other.model == run.model and other.name != run.name
                for span, used in epoch_spans(read_history(self.folder(other)), self.device_label)]
        if not seen:
            return None
        best = max(kind for kind, _ in seen)
        return min(span for kind, span in seen if kind == best)

    def run(self) -> int:
        """Run until every selected run is done, one failed for good, or the budget ends. Returns the number of
        failed runs (0 also when the budget stopped the plan early: call again to continue)."""
        for run in self.selected:
            self.config(run)  # a changed plan or a missing pretrained file stops us before anything runs
        with PlanLock(self.results / self.plan.name) as lock:
            self._holding = True
            try:
                for line in self.outlook.plan_lines():
                    self.log(line)
                return self._run(lock)
            finally:
                self._holding = False
                if self.display is not None:
                    self.display.close()
                if self._hints is not None:  # every training has ended: nobody reads the thread files
                    shutil.rmtree(self._hints, ignore_errors=True)
                    self._hints, self._threads = None, {}

    def _run(self, lock: PlanLock) -> int:
        t0 = time.time()
        deadline = None if self.budget_s is None else t0 + self.budget_s - self.margin_s
        previous = signal.signal(signal.SIGTERM, interrupt_as_ctrl_c)
        try:
            while True:
                for name, proc in list(self.procs.items()):
                    if proc.poll() is not None:
                        del self.procs[name]
                        run = self.plan.run(name)
                        if self.status(run).status == "done":
                            self.log(self.outlook.finish_line(run, self.committed))
                        else:
                            self.failed[name] = str(self.folder(run) / "train.log")
                            self.log(f"{name}: FAILED with exit status {proc.returncode}; see {self.failed[name]}")
                self._stop_before_the_deadline(deadline)
                runnable = self._runnable(deadline)
                # New runnable runs appear only when a run finishes, so a run given the idle slots' cores never
                # shares them with a later start: the cores are never oversubscribed.  A run that has written its
                # metrics.json is only exiting: it no longer counts as using cores.
                # The runnable runs not started now (a finished run's slot frees only when its process has
                # exited) count too, so a run going is not given cores a start will want a poll later.
                going = [n for n in self.procs if not (self.folder(self.plan.run(n)) / "metrics.json").is_file()]
                threads = self._cpu_share(len(going) + len(runnable))
                for run in runnable[: self.jobs - len(self.procs)]:
                    self._start(run, threads)
                self._rebalance(going, threads)
                if sorted(self.procs) != lock.recorded:
                    lock.running(list(self.procs))
                if not self.procs:
                    break
                if self.display is not None:
                    self.display.update(*self.outlook.live(self.progress_file))
                time.sleep(self.poll_s)
        except KeyboardInterrupt:
            for name in list(self.procs):
                self._stop(name, "interrupted")
            raise
        finally:
            signal.signal(signal.SIGTERM, previous)
        for line in self.report():
            self.log(line)
        left = [r.name for r in self.selected if self.status(r).status != "done"]
        if left and not self.failed:
            self.log(f"{len(left)} run(s) unfinished: call the same command again to continue")
        return len(self.failed)

    def _stop_before_the_deadline(self, deadline: float | None) -> None:
        if deadline is None:
            return
        now = time.time()
        for name in list(self.procs):
            run = self.plan.run(name)
            p = progress(self.folder(run), run.settings.get("epochs", TrainConfig.epochs), self.device_label)
            state, history = self.folder(run) / "state.pt", self.folder(run) / "history.jsonl"
            # the epoch is committed once state.pt is at least as new as the history row it follows
            just_committed = p.epochs_done > self._committed[name] and state.is_file() and history.is_file() \
                and state.stat().st_mtime >= history.stat().st_mtime
            if just_committed:
                self._committed[name] = p.epochs_done
                if p.epoch_s and now + p.epoch_s > deadline and p.status != "done":
                    self._stop(name, "its next epoch would not fit in the budget")
                    continue
            if now >= deadline:
                self._stop(name, "the budget is spent")


    def dry_run(self) -> list[str]:
        """What ``run`` would do and how long it should take, without starting or writing anything."""
        source = self.data_source()
        found = f"data: {source}" if source else "data: none found here; the first start downloads CIFAR-10"
        return [found, *self.outlook.plan_lines()]


def plan_report(plan: Plan, results: str | os.PathLike = "results") -> list[str]:
    """The status lines of every run of ``plan`` (what ``ttq reproduce --status`` prints)."""
    return Runner(plan, results).report()
