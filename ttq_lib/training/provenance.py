"""Where a result came from: git commit (and, for a dirty tree, which changes), library versions, machine.

The commit is that of the checkout the running ``ttq_lib`` was imported from (:data:`CODE_DIR`), not of
whatever repository the command was started in: ``ttq train`` run from another project's folder must not
record that project's commit as the code that trained the run."""
from __future__ import annotations

import hashlib
import os
import platform
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import torch

#: The package folder (``ttq_lib``) the running library was imported from; its git checkout is the code a run
#: records.
CODE_DIR = Path(__file__).resolve().parent.parent


def _is_checkout(code_dir: Path) -> bool:
    """Whether ``code_dir`` is in a source checkout (it or its parent holds pyproject.toml): an installed wheel's
    site-packages may lie inside some other git repository (a virtual environment in a project), whose commit is
    not ours."""
    return any((d / "pyproject.toml").is_file() for d in (code_dir, code_dir.parent))


def _git(args: list[str], where: Path, text: bool = True):
    """``git args`` run in ``where`` (raises CalledProcessError outside a work tree, OSError without git)."""
    return subprocess.run(["git", *args], cwd=where, capture_output=True, text=text, check=True).stdout


def repo_root(path: str | os.PathLike | None = None) -> Path | None:
    """The git work tree holding ``path`` (a folder or file; default the current directory); None outside git
    (or without git)."""
    where = Path(path or Path.cwd()).resolve()
    where = where if where.is_dir() else where.parent
    try:
        return Path(_git(["rev-parse", "--show-toplevel"], where).strip())
    except (OSError, subprocess.CalledProcessError):
        return None


def git_commit(code_dir: Path = CODE_DIR) -> str:
    """HEAD's hash of the checkout holding ``code_dir``, with '+dirty' when tracked files have uncommitted
    changes; "unknown" for an installed copy, not a source checkout (its version is recorded then).

    A copy of the tree without .git (a remote GPU machine) can pass the hash in TTQ_GIT_COMMIT."""
    if os.environ.get("TTQ_GIT_COMMIT"):
        return os.environ["TTQ_GIT_COMMIT"]
    if not _is_checkout(code_dir):
        return "unknown"
    try:
        head = _git(["rev-parse", "HEAD"], code_dir)
        dirty = _git(["status", "--porcelain", "--untracked-files=no"], code_dir)
        return head.strip() + ("+dirty" if dirty.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: The diff whose sha256 :func:`git_changes` records: ``--binary`` so that two different edits of a binary file
#: hash differently (plain ``git diff`` prints only "Binary files differ"); no colour, external diff tools, text
#: conversions or rename detection, which depend on the user's configuration rather than on the changes.
GIT_DIFF = ("git", "diff", "HEAD", "--binary", "--no-color", "--no-ext-diff", "--no-textconv", "--no-renames")
ENV_DIFF_SHA256 = "TTQ_GIT_DIFF_SHA256"


def git_changes(code_dir: Path = CODE_DIR) -> dict:
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
        diff = _git(list(GIT_DIFF[1:]), code_dir, text=False)
        names = _git(["diff", "HEAD", "--name-only", "-z", "--no-renames"], code_dir, text=False)
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


def package_version() -> str:
    """The installed ttq-workbook's version ("unknown" when it runs from a folder that was never installed)."""
    try:
        return metadata.version("ttq-workbook")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(code_dir: Path = CODE_DIR) -> dict:
    """The commit, versions and machine of a run; for a dirty tree also ``git_diff_sha256`` and
    ``git_dirty_files`` (:func:`git_changes`), so that "+dirty" says which uncommitted changes ran.
    ``code_dir`` is the code whose commit is recorded: the library's own checkout unless a test says otherwise."""
    commit = git_commit(code_dir)
    changes = git_changes(code_dir) if commit.endswith("+dirty") or os.environ.get("TTQ_GIT_COMMIT") else {}
    return {"git_commit": commit, **changes, "ttq_workbook_version": package_version(),
            "torch_version": torch.__version__, "python_version": platform.python_version(),
            "machine": machine()}
