"""Where a result came from: git commit, library versions, machine."""
from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

import torch


def repo_root() -> Path:
    """The git work tree holding the current directory (or the current directory outside git)."""
    try:
        out = subprocess.run(["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True,
                             check=True)
        return Path(out.stdout.strip())
    except (OSError, subprocess.CalledProcessError):
        return Path.cwd()


def git_commit() -> str:
    """HEAD's hash, with '+dirty' when tracked files have uncommitted changes.

    A copy of the tree without .git (a remote GPU machine) can pass the hash in TTQ_GIT_COMMIT."""
    if os.environ.get("TTQ_GIT_COMMIT"):
        return os.environ["TTQ_GIT_COMMIT"]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, check=True)
        return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def machine() -> str:
    """A one-line description of the hardware the run used."""
    cpu = platform.processor() or platform.machine()
    desc = f"{platform.node()} {platform.system()} {cpu}, {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def command_line() -> str:
    """The command as the user typed it (the console script's name instead of its path)."""
    prog = Path(sys.argv[0]).name
    if prog in ("cli.py", "__main__.py"):
        prog = "python -m ttq_lib.cli"
    return " ".join([prog] + sys.argv[1:])


def provenance() -> dict:
    return {"git_commit": git_commit(), "torch_version": torch.__version__,
            "python_version": platform.python_version(), "machine": machine()}
