"""Atomic writes (ttq_lib.formats.atomic): permissions without touching the umask, fsync before the rename,
nothing changed when the writer fails, and what a SIGKILL in the middle of a write leaves behind."""
from __future__ import annotations

import os
import re
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ttq_lib.formats.atomic import atomic_path, write_json_atomic, write_text_atomic

REPO = Path(__file__).resolve().parents[1]
TEMP = re.compile(r"\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{12}\.tmp")


def _umask() -> int:
    """This process's umask, read without os.umask (which would change it for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:
        pass
    pytest.skip("no /proc/self/status to read the umask from")


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _python(code: str, *args: str, umask: int | None = None, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    pre = (lambda: os.umask(umask)) if umask is not None else None
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args], capture_output=True, text=True,
                          env=env, preexec_fn=pre, timeout=120, check=False, **kw)


@pytest.mark.parametrize("writer", ["text", "torch", "safetensors"])
def test_mode_is_the_usual_one(tmp_path, writer):
    target = tmp_path / f"out.{writer}"
    with atomic_path(target) as tmp:
        if writer == "text":
            tmp.write_text("hello")
        elif writer == "torch":
            torch.save({"a": torch.arange(3)}, tmp)
        else:  # safetensors 0.8 replaces the given path with its own 0600 file (measured)
            save_file({"a": torch.arange(3)}, str(tmp))
    assert _mode(target) == 0o666 & ~_umask()
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_mode_under_a_known_umask_in_a_subprocess(tmp_path):
    code = """
        import sys, torch
        from pathlib import Path
        from safetensors.torch import save_file
        from ttq_lib.formats.atomic import atomic_path, write_text_atomic
        d = Path(sys.argv[1])
        write_text_atomic(d / "a.txt", "x")
        with atomic_path(d / "b.pt") as tmp:
            torch.save([1, 2], tmp)
        with atomic_path(d / "c.safetensors") as tmp:
            save_file({"t": torch.zeros(2)}, str(tmp))
        with atomic_path(d / "d.safetensors", mode=0o644) as tmp:
            save_file({"t": torch.zeros(2)}, str(tmp))
    """
    out = _python(code, str(tmp_path), umask=0o027)
    assert out.returncode == 0, out.stderr
    modes = {p.name: _mode(p) for p in tmp_path.iterdir()}
    assert modes == {"a.txt": 0o640, "b.pt": 0o640, "c.safetensors": 0o640, "d.safetensors": 0o644}


def test_umask_is_never_touched(tmp_path, monkeypatch):
    def no_umask(*args):
        raise AssertionError("os.umask changes the mask of every thread: atomic writes must not call it")

    monkeypatch.setattr(os, "umask", no_umask)
    write_json_atomic(tmp_path / "m.json", {"a": 1})
    with atomic_path(tmp_path / "w.safetensors") as tmp:
        save_file({"a": torch.ones(2)}, str(tmp))
    assert (tmp_path / "m.json").read_text() == '{\n  "a": 1\n}\n'
    assert _mode(tmp_path / "w.safetensors") == 0o666 & ~_umask()


def test_fsync_file_then_rename_then_fsync_folder(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else f"fsync {os.fstat(fd).st_size} bytes")
        real_fsync(fd)

    def replace(a, b):
        events.append(f"replace -> {Path(b).name}")
        real_replace(a, b)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_text_atomic(tmp_path / "t.txt", "12345")
    assert events == ["fsync 5 bytes", "replace -> t.txt", "fsync dir"]


def test_a_folder_that_cannot_be_fsynced_is_tolerated(tmp_path, monkeypatch):
    real_fsync = os.fsync

    def fsync(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(22, "Invalid argument")  # what some file systems answer for a folder
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    write_text_atomic(tmp_path / "t.txt", "ok")
    assert (tmp_path / "t.txt").read_text() == "ok"


def test_failing_writer_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "keep.bin"
    old = bytes(range(256)) * 10
    target.write_bytes(old)
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == old
    assert [p.name for p in tmp_path.iterdir()] == ["keep.bin"]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_stale_temps_removed_only_when_old_and_their_writer_is_gone(tmp_path):
    target = tmp_path / "r.json"
    dead, alive = _dead_pid(), os.getpid()
    past = time.time() - 3600
    names = {
        "old_dead": f".r.json.{dead}-{'a' * 12}.tmp",       # a crashed earlier run: removed
        "old_alive": f".r.json.{alive}-{'b' * 12}.tmp",     # a writer still running: kept
        "young_dead": f".r.json.{dead}-{'c' * 12}.tmp",     # newer than this process's import: kept
        "other_target": f".r.json.x.{dead}-{'d' * 12}.tmp",  # belongs to r.json.x: kept
    }
    for key, name in names.items():
        (tmp_path / name).write_text(key)
        if key != "young_dead":
            os.utime(tmp_path / name, (past, past))
    write_json_atomic(target, [1])
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted([target.name, names["old_alive"], names["young_dead"], names["other_target"]])


@pytest.mark.parametrize("old", [b"old complete content\n" * 1000, None], ids=["old-file", "no-file"])
def test_sigkill_mid_write_leaves_old_file_or_none(tmp_path, old):
    target = tmp_path / "big.bin"
    if old is not None:
        target.write_bytes(old)
    writer = """
        import sys
        from ttq_lib.formats.atomic import atomic_path
        with atomic_path(sys.argv[1]) as tmp, open(tmp, "wb") as f:
            for i in range(256):  # up to 256 MiB, far more than is written before the kill
                f.write(bytes([i]) * (1 << 20))
                f.flush()
                if i == 3:
                    print("writing", tmp, flush=True)
    """
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(writer), str(target)], stdout=subprocess.PIPE,
                            text=True, env=env)
    try:
        line = proc.stdout.readline()
        assert line.startswith("writing "), line
        tmp = Path(line.split(" ", 1)[1].strip())
        assert tmp.stat().st_size >= 4 << 20  # really in the middle of the write
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert proc.returncode == -signal.SIGKILL
    # The target is untouched; the killed writer's temp file is the only garbage.
    if old is None:
        assert not target.exists()
    else:
        assert target.read_bytes() == old
    leftovers = sorted(p.name for p in tmp_path.iterdir() if p != target)
    assert leftovers == [tmp.name]
    assert TEMP.fullmatch(tmp.name)["pid"] == str(proc.pid)
    # The next run's successful write to the same target removes it (its writer is gone, it is older).
    out = _python("import sys; from ttq_lib.formats.atomic import write_text_atomic; "
                  "write_text_atomic(sys.argv[1], 'new')", str(target))
    assert out.returncode == 0, out.stderr
    assert target.read_text() == "new"
    assert [p.name for p in tmp_path.iterdir()] == [target.name]


def test_temp_files_match_the_documented_name(tmp_path):
    with atomic_path(tmp_path / "x.safetensors") as tmp:
        m = TEMP.fullmatch(tmp.name)
        assert m and m["name"] == "x.safetensors" and m["pid"] == str(os.getpid())
        assert tmp.parent == tmp_path and tmp.exists()
        tmp.write_text("x")
    assert (tmp_path / "x.safetensors").read_text() == "x"
