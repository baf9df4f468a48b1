"""Where a result came from: git commit (and, for a dirty tree, which changes), library versions, machine."""
from __future__ import annotations

import hashlib
import os
import platform
import re
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


#: The diff whose sha256 :func:`git_changes` records: ``--binary`` so that two different edits of a binary file
#: hash differently (plain ``git diff`` prints only "Binary files differ"); no colour, external diff tools, text
#: conversions or rename detection, which depend on the user's configuration rather than on the changes.
GIT_DIFF = ("git", "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames")
ENV_DIFF_SHA256 = "TTQ_GIT_DIFF_SHA256"


def git_changes() -> dict:
    """What '+dirty' in :func:`git_commit` stands for: ``git_diff_sha256`` (sha256 of the bytes of
    :data:`GIT_DIFF`, tracked files against HEAD, staged or not) and ``git_dirty_files`` (their paths, relative
    to the work tree); ``{}`` for a clean tree or outside git.  Untracked files are not included, as in
    :func:`git_commit`.

    A copy without .git that got its commit from TTQ_GIT_COMMIT can get the hash from TTQ_GIT_DIFF_SHA256
    (``<GIT_DIFF> | sha256sum`` run where the copy was made); the file list is then not recorded.
    """
    if os.environ.get("TTQ_GIT_COMMIT"):
        digest = os.environ.get(ENV_DIFF_SHA256, "").strip().lower()
        if not digest:
            return {}
        if not re.fullmatch(r"[0-9a-f]{64}", digest):
            raise ValueError(f"{ENV_DIFF_SHA256}={digest!r} is not a sha256 hex digest (64 hex digits): set it to "
                             f"the hash of `{' '.join(GIT_DIFF)}` output where the copy was made, or unset it")
        return {"git_diff_sha256": digest}
    try:
        # bytes, not text: a diff may hold binary patches and file names in any encoding
        diff = subprocess.run(list(GIT_DIFF), capture_output=True, check=True).stdout
        names = subprocess.run(["git", "diff", "HEAD", "--name-only", "-z", "--no-renames"], capture_output=True,
                               check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    files = [os.fsdecode(n) for n in names.split(b"\0") if n]
    if not diff and not files:
        return {}
    return {"git_diff_sha256": hashlib.sha256(diff).hexdigest(), "git_dirty_files": files}


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
    """The commit, versions and machine of a run; for a dirty tree also ``git_diff_sha256`` and
    ``git_dirty_files`` (:func:`git_changes`), so that "+dirty" says which uncommitted changes ran."""
    commit = git_commit()
    changes = git_changes() if commit.endswith("+dirty") or os.environ.get("TTQ_GIT_COMMIT") else {}
    return {"git_commit": commit, **changes, "torch_version": torch.__version__,
            "python_version": platform.python_version(), "machine": machine()}
