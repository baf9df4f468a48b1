"""How long a plan will take on this machine: each run's epoch time, measured here, and the plan's schedule.

An epoch time comes, in this order, from the run's own epochs on this device, from the plan's other runs of the
same model and method on this device, or from a few training steps timed here on random images of the run's
shape (its model, method, batch, layout; the data pipeline and start-up are not in them).  Times measured on
another thread count are scaled as if an epoch's time went with 1/threads: the assumption the estimate names.
The schedule follows the runner's rules: at most ``jobs`` runs at once, a run waits for the run it starts from,
the cores are split between the runs that can go.
"""
from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Callable

import torch

from ..training.config import TrainConfig, default_channels_last
from ..training.devices import resolve_device
from ..training.optim import make_optimizer
from ..training.start_model import build
from ..training.step import train_step

#: What every estimate assumes, said once beside it.
ASSUMPTION = ("an epoch's time measured at one thread count is scaled as 1/threads to another, and the machine "
              "does nothing else meanwhile")


@dataclass
class EpochTime:
    seconds: float
    how: str  # where the figure comes from, for the plan's printout


def scaled_mean(spans: list[tuple[float, int]], threads: int) -> float | None:
    """The mean epoch time at ``threads`` from (seconds, threads used) spans, each scaled by used / threads."""
    if not spans:
        return None
    return sum(s * used / threads for s, used in spans) / len(spans)


def split_sizes(cfg: TrainConfig) -> tuple[int, int]:
    """(training images, evaluated images) of a run, from its settings alone (nothing is loaded)."""
    data = str(cfg.data or "")
    if data.startswith("synthetic"):
        n = int(data.partition(":")[2] or 2000)
        train, test = n, max(10, n // 5)
    else:
        train, test = 50_000, 10_000
    if cfg.holdout:
        train, test = train - cfg.holdout, cfg.holdout
    return cfg.train_subset or train, cfg.test_subset or test


def timed_epoch(cfg: TrainConfig, threads: int, steps: int = 5, warmup: int = 2) -> float:
    """Seconds of one epoch of ``cfg`` at ``threads`` CPU threads, from ``steps`` training steps and one
    evaluation batch timed here after ``warmup`` steps (allocator, kernels, thread pools)."""
    cfg = dataclasses.replace(cfg, start_from=None)  # the architecture alone: the start file may not exist yet
    device = resolve_device(cfg.device)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        model = build(cfg)[0].to(device).train()
        channels_last = default_channels_last(device.type) if cfg.channels_last is None else cfg.channels_last
        if channels_last:
            model.to(memory_format=torch.channels_last)
        opt = make_optimizer(model, cfg)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(cfg.batch_size, 3, 32, 32, generator=gen).to(device)
        y = torch.randint(0, 10, (cfg.batch_size,), generator=gen).to(device)
        sums = [torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device)]
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
        for _ in range(warmup):
            train_step(model, model, opt, x, y, sums, cfg.precision == "bf16", channels_last)
        sync()
        t0 = time.perf_counter()
        for _ in range(steps):
            train_step(model, model, opt, x, y, sums, cfg.precision == "bf16", channels_last)
        sync()
        step_s = (time.perf_counter() - t0) / steps
        model.eval()
        with torch.no_grad():  # a fifth of the evaluation's batch of 500 (training.evaluate.accuracy)
            xe = torch.randn(100, 3, 32, 32, generator=gen).to(device)
            model(xe)
            sync()
            t0 = time.perf_counter()
            model(xe)
            sync()
            eval_s = 5 * (time.perf_counter() - t0)
    finally:
        torch.set_num_threads(before)
    train_images, test_images = split_sizes(cfg)
    return math.ceil(train_images / cfg.batch_size) * step_s + math.ceil(test_images / 500) * eval_s


#: Timed epochs by kind of run, for the life of the process (a runner called again times nothing twice).
_TIMED: dict[tuple, float] = {}


class EpochTimes:
    """Epoch times of a plan's runs at a given thread count; timed steps are cached per kind of run."""

    def __init__(self, history_spans: Callable[[object], list[tuple[float, int]]],
                 kin_spans: Callable[[object], list[tuple[str, list[tuple[float, int]]]]],
                 config: Callable[[object], TrainConfig]):
        self._own, self._kin, self._config = history_spans, kin_spans, config

    def __call__(self, run, threads: int) -> EpochTime:
        at = f"{threads} thread{'s' if threads > 1 else ''}"
        own = scaled_mean(self._own(run), threads)
        if own is not None:
            return EpochTime(own, f"its own {len(self._own(run))} epoch(s) here, at {at}")
        for name, spans in self._kin(run):
            kin = scaled_mean(spans, threads)
            if kin is not None:
                return EpochTime(kin, f"{name}'s epochs here, at {at}")
        cfg = self._config(run)
        key = (cfg.model, cfg.method, cfg.batch_size, cfg.precision, cfg.channels_last, cfg.data, cfg.holdout,
               cfg.train_subset, cfg.test_subset, cfg.device, threads)
        if key not in _TIMED:
            _TIMED[key] = timed_epoch(cfg, threads)
        return EpochTime(_TIMED[key], f"steps timed here, at {at}")


@dataclass
class Job:
    """A run as the schedule sees it: the work left (in epochs), what it waits for, its speed."""
    name: str
    epochs_left: float
    epoch_s: Callable[[int], float]  # seconds per epoch at a thread count
    after: str | None = None
    startup_s: float = 0.0
    running_threads: int | None = None  # already going, on this many threads (no start-up to pay)


def cpu_share(cores: int, jobs: int, wanting: int) -> int:
    """CPU threads each run gets when ``wanting`` runs want to go: the cores split among at most ``jobs``."""
    return max(1, cores // max(1, min(jobs, wanting)))


def simulate(jobs: list[Job], slots: int, cores: int, shared_device: bool = False
             ) -> dict[str, tuple[float, float, int]]:
    """Play the runner's schedule: for each job (start, finish) seconds from now and the threads it starts on.

    CPU: each run going gets the current :func:`cpu_share`, re-split when runs come and go.  ``shared_device``
    (a GPU): the runs going share it, each at 1/n of its speed alone.  Jobs that can never start (they wait for
    a run outside ``jobs`` that is not finished) are left out."""
    by_name = {j.name: j for j in jobs}
    left = {j.name: j.epochs_left for j in jobs}
    startup = {j.name: 0.0 if j.running_threads else j.startup_s for j in jobs}
    going: dict[str, int] = {j.name: j.running_threads for j in jobs if j.running_threads}
    out: dict[str, list] = {n: [0.0, 0.0, t] for n, t in going.items()}
    done: set[str] = set()
    now = 0.0
    while True:
        ready = [j.name for j in jobs if j.name not in going and j.name not in done
                 and (j.after is None or j.after not in by_name or j.after in done)]
        share = 1 if shared_device else cpu_share(cores, slots, len(going) + len(ready))
        for name in ready[: max(0, slots - len(going))]:
            going[name] = share
            out[name] = [now, 0.0, share]
        if not going:
            break
        going = {n: share for n in going}
        speed = {n: 1.0 / (by_name[n].epoch_s(t) * (len(going) if shared_device else 1))  # epochs per second
                 for n, t in going.items()}
        dt = min(startup[n] + left[n] / speed[n] for n in going)
        for n in list(going):
            boot = min(dt, startup[n])
            startup[n] -= boot
            left[n] -= (dt - boot) * speed[n]
            if startup[n] + left[n] / speed[n] <= 1e-6:
                done.add(n)
                del going[n]
                out[n][1] = now + dt
        now += dt
    return {n: tuple(v) for n, v in out.items() if n in done}


def duration(seconds: float) -> str:
    """'45 s', '12 min', '1 h 55 min': how long, to the precision an estimate deserves."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60)
    return f"{minutes} min" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"
