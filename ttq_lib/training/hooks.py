"""What a supervisor (``ttq reproduce``) exchanges with a training it started: two small files, named on
``ttq train``'s command line and passed to the loop as a :class:`RunHooks` object.

* The thread file holds the CPU thread count the runner asks for; the loop takes it up before every epoch.
  The runner splits the cores between the runs going at once and rewrites the file when runs come and go, so a
  run left alone takes the freed cores instead of running on at half speed.
* The progress file says where the run is (epoch, step, phase), rewritten at most about once a second: the
  runner draws its live display from it without reading the training's log.

The kill tests reach the loop the same way: ``kill_at`` names a point of the loop where the process dies, as a
power cut or the OOM killer would kill it (``ttq train`` takes it from ``$TTQ_KILL_AT``).

A lone ``ttq train`` has none of these: the default ``RunHooks()`` does nothing.
"""
from __future__ import annotations

import dataclasses
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch


#: Where ``ttq train`` takes the kill tests' fault point from (unset in normal use).
ENV_KILL_AT = "TTQ_KILL_AT"


def follow_thread_hint(path: str | os.PathLike | None) -> int:
    """Take up the thread count written in ``path`` (if given and readable); return the count in use.

    A missing, half-written or bad file changes nothing: the run keeps the threads it has."""
    if path:
        try:
            wanted = int(Path(path).read_text().strip())
        except (OSError, ValueError):
            wanted = 0
        if wanted >= 1 and wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
    return torch.get_num_threads()


def read_progress(path: str | os.PathLike) -> dict | None:
    """The last progress a training wrote to ``path``; None while there is none (or a write is under way)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


@dataclass
class RunHooks:
    """The loop's side of the exchange; see the module docstring.  ``every_s``: the least time between two
    progress writes within an epoch (a write is a rename, cheap, but not free on every step).  ``kill_at``:
    ``<point>:<n>`` dies the n-th time the loop reaches ``<point>``; ``<point>:<n>@<rank>`` only in torchrun's
    process of that rank."""
    threads_file: str | os.PathLike | None = None
    progress_file: str | os.PathLike | None = None
    kill_at: str | None = None
    every_s: float = 1.0
    _state: dict = field(default_factory=dict, repr=False)
    _written: float = field(default=0.0, repr=False)
    _reached: dict = field(default_factory=dict, repr=False)

    def for_rank(self, rank: int) -> "RunHooks":
        """The hooks of torchrun's process ``rank``: only rank 0 reports progress; every rank has the others."""
        return self if rank == 0 else dataclasses.replace(self, progress_file=None)

    def fault(self, point: str, rank: int = 0) -> None:
        """Die here (SIGKILL) when ``kill_at`` names this point, this rank and this count."""
        if not self.kill_at:
            return
        spec, _, only = self.kill_at.partition("@")
        name, _, count = spec.partition(":")
        if name == point and (not only or int(only) == rank):
            self._reached[point] = self._reached.get(point, 0) + 1
            if self._reached[point] == int(count or 1):
                os.kill(os.getpid(), signal.SIGKILL)

    def epoch_start(self, epoch: int, epochs: int, steps: int) -> int:
        """Before epoch ``epoch`` (0-based) of ``epochs``: follow the thread hint, say the epoch started;
        returns the thread count the epoch runs on."""
        threads = follow_thread_hint(self.threads_file)
        self._state = {"epoch": epoch + 1, "epochs": epochs, "step": 0, "steps": steps, "phase": "train",
                       "threads": threads, "epoch_started": time.time()}
        self._write()
        return threads

    def step(self, step: int) -> None:
        """After step ``step`` (0-based) of the epoch."""
        if self.progress_file is not None and time.time() - self._written >= self.every_s:
            self._state["step"] = step + 1
            self._write()

    def evaluating(self) -> None:
        """The epoch's steps are done; its evaluation starts."""
        self._state.update(step=self._state.get("steps", 0), phase="eval")
        self._write()

    def _write(self) -> None:
        if self.progress_file is None:
            return
        self._written = time.time()
        path = Path(self.progress_file)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps({**self._state, "time": self._written}))
        os.replace(tmp, path)  # readers see the old or the new file, never half of one
