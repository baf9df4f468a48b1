"""The runner's trainings as processes: they stop when the runner dies, and TERM reaches the runner as Ctrl-C."""
from __future__ import annotations

import ctypes
import os
import signal
import sys


def prctl():
    """Linux's prctl, looked up in the runner (not in the forked child, where loading a library is unsafe)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def die_with_runner(parent: int, call) -> None:
    """In a training's process, before it starts: get SIGTERM when the runner dies.

    The trainings run in their own sessions (Ctrl-C at the terminal reaches the runner, which stops them at an
    epoch boundary), so a runner killed outright (SIGKILL, a lost machine) would leave them training on with
    nobody to stop them, and a later runner would start a second training in the same folder.  With
    PR_SET_PDEATHSIG the kernel sends each one SIGTERM instead, which stops it like the runner's own stop."""
    call(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the runner died before the line above took effect
        os._exit(1)


def interrupt_as_ctrl_c(signum, frame):
    """TERM (a job scheduler, a timeout) stops the runs like Ctrl-C does, instead of orphaning them."""
    raise KeyboardInterrupt
