"""Write files so that a crash never leaves a half-written one: write a temp file, then rename.

:func:`atomic_path` creates ``.<name>.<pid>-<random>.tmp`` beside the target, lets the caller's writer fill
it, flushes it to disk (``fsync``), renames it over the target (``os.replace``, atomic on POSIX) and flushes
the folder so that the rename itself survives a power cut.  A reader therefore sees the old file or the new
one, never a mix.

What a crash leaves: a process killed between creating the temp file and the rename (SIGKILL, power cut)
leaves the target as it was (or absent, if it did not exist) plus its temp file.  The next successful write
to the same target removes such leftovers when they are provably stale: their writer's process id is no
longer running on this machine and the file is older than this process's import of this module.  A writer
that makes its own temporary file (safetensors' ``save_file`` writes ``.tmpXXXXXX`` and renames it onto the
path it is given) may leave that file too; it cannot be told apart from other programs' files, so it stays.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import stat
import time
from pathlib import Path

# Temp files of this process are all younger than this: an older one belongs to an earlier process.
_IMPORTED = time.time()


def _create_temp(path: Path) -> Path:
    """Create an empty temp file beside ``path``, exclusively, with the usual permissions.

    ``os.open(..., 0o666)`` lets the kernel apply the umask (and a folder's default ACL), as for any new
    file; reading the umask with ``os.umask`` would change it process-wide for a moment, racing other threads.
    """
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{os.getpid()}-{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_CLOEXEC", 0), 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return tmp
    raise FileExistsError(f"could not create a unique temporary file beside {path}")


def _fsync(path: Path, directory: bool = False) -> None:
    """Flush ``path``'s data (or a folder's entries) to disk.  A folder is best effort: Windows cannot open
    one, and some file systems refuse to fsync it; the rename is then as durable as that system allows."""
    try:
        fd = os.open(path, os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0))
    except OSError:
        if directory:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not directory:
            raise
    finally:
        os.close(fd)


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only, nothing is sent
    except ProcessLookupError:
        return False
    except OSError:  # PermissionError: alive, owned by someone else
        return True
    return True


def _remove_stale_temps(path: Path) -> None:
    """Remove ``.<name>.<pid>-<random>.tmp`` files of ``path`` left by writers that died (see module doc)."""
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return
    pattern = re.compile(re.escape(f".{path.name}.") + r"(\d+)-[0-9a-f]{12}\.tmp")
    try:
        entries = list(os.scandir(path.parent))
    except OSError:
        return
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if not m:
            continue
        try:
            # both tests: a live pid may be a concurrent writer; an old file alone may be one on another host
            if entry.stat(follow_symlinks=False).st_mtime < _IMPORTED and not _pid_running(int(m.group(1))):
                os.unlink(entry.path)
        except OSError:
            pass  # removed meanwhile, or not ours to remove


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, mode: int | None = None):
    """Yield a temporary path in the target's folder; on success it replaces ``path`` in one rename.

    The writer may write the yielded file or replace it (safetensors does).  The result gets ``mode`` if
    given, else the permissions any new file gets (``0o666 & ~umask``), whatever the writer did: set
    permissions through ``mode``, not by ``chmod`` inside the block.  If the block raises, ``path`` is left
    untouched and the temp file removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _create_temp(path)
    try:
        want = stat.S_IMODE(os.stat(tmp).st_mode) if mode is None else mode
        yield tmp
        # safetensors replaces the file with its own 0600 one: give the result the permissions chosen above
        if stat.S_IMODE(os.stat(tmp).st_mode) != want:
            os.chmod(tmp, want)
        _fsync(tmp)  # data on disk before the rename, else a crash can leave an empty file under the new name
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    _remove_stale_temps(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json_atomic(path: str | os.PathLike, obj) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
