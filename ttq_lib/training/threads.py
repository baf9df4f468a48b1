"""CPU threads of a run that shares the machine with others: the count its runner asks for, taken between epochs.

``ttq reproduce`` splits the cores between the runs going at once, and a run's thread count would otherwise
be fixed when its process starts (``OMP_NUM_THREADS``).  So a run started beside another kept half the cores
after the other finished, and ran on alone at half speed.  The runner now writes each run's share to a small
file named by ``$TTQ_THREADS_FILE`` and rewrites it when runs come and go; the loop reads it before every
epoch.  A lone ``ttq train`` has no such file and keeps its threads.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

#: The environment variable naming the file that holds the thread count (one integer) a runner asks for.
ENV_THREADS_FILE = "TTQ_THREADS_FILE"


def follow_thread_hint() -> int:
    """Take up the thread count of ``$TTQ_THREADS_FILE`` if set and readable; return the count in use.

    A missing, half-written or bad file changes nothing: the run keeps the threads it has."""
    path = os.environ.get(ENV_THREADS_FILE)
    if path:
        try:
            wanted = int(Path(path).read_text().strip())
        except (OSError, ValueError):
            wanted = 0
        if wanted >= 1 and wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)
    return torch.get_num_threads()
