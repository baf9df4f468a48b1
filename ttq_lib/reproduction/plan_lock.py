"""One runner per plan folder at a time, and what it is running, for `ttq reproduce --status` in another shell.

Two `ttq reproduce` calls on one plan would each start the same unfinished run, and two trainings writing one
run folder could leave a checkpoint from one beside the history of the other.  So a runner holds an exclusive
``flock`` on ``results/<plan>/.runner.lock`` while it runs: a second runner is refused, naming the first one's
process.  The kernel drops the lock when the process ends, however it ends (SIGKILL included), so a killed
runner never leaves a stale lock behind.  Beside it, ``.runner.json`` (written atomically) names the runs the
holder has going, which ``--status`` shows as running instead of stopped.

Without ``fcntl`` (Windows) there is no lock and ``--status`` cannot see other runners; nothing else changes.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..formats.atomic import write_json_atomic

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

LOCK_FILE, STATE_FILE = ".runner.lock", ".runner.json"


class PlanBusy(RuntimeError):
    """Another runner holds the plan folder."""


class PlanLock:
    """Hold ``folder``'s runner lock (a context manager); :meth:`running` records the runs going."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None
        self.recorded: list[str] = []  # the names last written to .runner.json

    def __enter__(self) -> "PlanLock":
        self.folder.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            return self
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            other = other_runner(self.folder)
            pid = f" (process {other['pid']})" if other else ""
            raise PlanBusy(f"{self.folder} is being run by another `ttq reproduce`{pid}: wait for it to end, or "
                           "stop it (Ctrl-C or kill -TERM; its runs stop at an epoch boundary) and call again") \
                from None
        self._fd = fd
        self.running([])
        return self

    def running(self, names: list[str]) -> None:
        self.recorded = sorted(names)
        if self._fd is not None:
            write_json_atomic(self.folder / STATE_FILE, {"pid": os.getpid(), "running": sorted(names)})

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            (self.folder / STATE_FILE).unlink(missing_ok=True)
            os.close(self._fd)  # releases the flock
            self._fd = None


def other_runner(folder: Path) -> dict | None:
    """``{"pid", "running"}`` of the runner holding ``folder``'s lock, or None if no runner holds it."""
    path = Path(folder) / LOCK_FILE
    if fcntl is None or not path.is_file():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:  # held: read what the holder wrote
        try:
            return json.loads((Path(folder) / STATE_FILE).read_text())
        except (OSError, json.JSONDecodeError):  # between its lock and its first write
            return {"pid": None, "running": []}
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
