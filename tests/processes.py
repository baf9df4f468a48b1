"""Finding a test's child processes by what their command lines name (Linux /proc), for fault-injection tests
that must show no training outlived what stopped it."""
from __future__ import annotations

from pathlib import Path


def processes_naming(path: Path) -> list[int]:
    """The processes whose command line mentions ``path`` (read from /proc)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if str(path).encode() in (proc / "cmdline").read_bytes():
                    pids.append(int(proc.name))
            except OSError:  # it ended meanwhile
                pass
    return pids
