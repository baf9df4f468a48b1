"""The runner's live display: a line per run going (epoch, step, last accuracy, time left) and an overall line.

On a terminal these are tqdm's positioned bars, redrawn in place at every poll, with the runner's event lines
(started, done, stopped) written above them.  Elsewhere (CI, ``nohup``, a notebook) the same lines are printed
as plain text every ``every_s`` seconds, so a log file shows the run advancing without a single control code.
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from typing import TextIO

from tqdm import tqdm

from .estimate import duration


@dataclass
class Overall:
    """The plan as a whole: runs done of those selected, time left to the last one's end, what waits."""
    done: int
    total: int
    left_s: float | None
    waiting: str = ""  # e.g. "3 run(s) wait for resnet20-adapt-s0"

    def __str__(self) -> str:
        left = f", about {duration(self.left_s)} left" if self.left_s is not None else ""
        return f"{self.done} of {self.total} runs done{left}"


@dataclass
class RunLine:
    """Where one run going stands."""
    name: str
    epoch: int                # the epoch under way, 1-based
    epochs: int
    step: int                 # its steps done
    steps: int
    phase: str                # "start" (loading), "train", "eval"
    last_acc: float | None    # the last committed epoch's accuracy on ...
    split: str                # ... this split
    left_s: float | None      # time left to the run's end

    def status(self) -> str:
        """'test 86.92 % (epoch 2), about 21 min left' (the part after the step count)."""
        acc = f"{self.split} {self.last_acc:.2f} % (epoch {self.epoch - 1})" if self.last_acc is not None \
            else "no epoch done yet"
        left = f", about {duration(self.left_s)} left" if self.left_s is not None else ""
        return acc + left

    def where(self) -> str:
        if self.phase == "start":
            return f"epoch {self.epoch}/{self.epochs}  starting (loading data and model)"
        what = "evaluating" if self.phase == "eval" else f"step {self.step}/{self.steps}"
        return f"epoch {self.epoch}/{self.epochs}  {what}"


class PlainDisplay:
    """Plain lines, every ``every_s`` seconds (and each event line at once)."""

    def __init__(self, stream: TextIO, every_s: float = 30.0):
        self.stream, self.every_s, self._last = stream, every_s, None

    def event(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def update(self, lines: list[RunLine], overall: Overall) -> None:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every_s:
            return
        self._last = now
        stamp = time.strftime("%H:%M:%S")
        width = max((len(line.name) for line in lines), default=0)
        for line in lines:
            print(f"{stamp}  {line.name:{width}s}  {line.where()}  {line.status()}", file=self.stream)
        waiting = f"; {overall.waiting}" if overall.waiting else ""
        print(f"{stamp}  overall: {overall}{waiting}", file=self.stream, flush=True)

    def close(self) -> None:
        pass


class TerminalDisplay:
    """tqdm bars in place: the overall one first, then one per slot (``jobs`` runs can go at once)."""

    def __init__(self, stream: TextIO, slots: int):
        self.stream = stream
        # A terminal that reports no width (a bare pseudo-terminal) would get empty bars: assume 120 columns.
        width = {} if shutil.get_terminal_size((0, 0)).columns else {"ncols": 120}
        self.overall, *self.slots = [tqdm(total=1, position=i, file=stream, dynamic_ncols=not width, leave=False,
                                          bar_format="{desc}  {bar:12}", **width) for i in range(slots + 1)]

    def event(self, text: str) -> None:
        tqdm.write(text, file=self.stream)

    def update(self, lines: list[RunLine], overall: Overall) -> None:
        _draw(self.overall, overall.done, max(1, overall.total), f"overall: {overall}")
        width = max((len(line.name) for line in lines), default=0)
        for i, bar in enumerate(self.slots):
            if i < len(lines):
                line = lines[i]
                _draw(bar, line.step if line.phase != "start" else 0, max(1, line.steps),
                      f"{line.name:{width}s}  {line.where()}  {line.status()}")
            else:
                _draw(bar, 0, 1, f"(free slot) {overall.waiting}")

    def close(self) -> None:
        for bar in (self.overall, *self.slots):
            bar.close()


def _draw(bar: tqdm, n: int, total: int, desc: str) -> None:
    bar.total, bar.n = total, n
    bar.set_description_str(desc, refresh=False)
    bar.refresh()


def make_display(stream: TextIO, slots: int, every_s: float = 30.0):
    """A :class:`TerminalDisplay` when ``stream`` is a terminal, else a :class:`PlainDisplay`."""
    isatty = getattr(stream, "isatty", None)
    return TerminalDisplay(stream, slots) if isatty is not None and isatty() else PlainDisplay(stream, every_s)
