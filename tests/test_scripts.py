"""The training scripts for real, with a fake training command: a failed run stops the script with a non-zero
status naming the run and its log, and SIGTERM / SIGINT stop every training run the script started."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or sys.platform == "win32", reason="needs bash")

# Stands in for `ttq` (TTQ=...) and for `python` (PYTHON=..., called as `-m ttq_lib.cli train ...` or `-c CODE`).
# Each call appends "PID ARGS" to $FAKE_CALLS.  FAKE_MODE: ok (write metrics.json, last.safetensors and a
# history row into --out), fail (exit 3), sleep (become `sleep 60`, a run that takes long).  FAKE_FAIL_ON=twn:
# fail when `twn` is one of the arguments, whatever the mode; FAKE_OK_ON=fp: succeed when `fp` is one.
FAKE = r"""#!/usr/bin/env bash
if [ "$1" = -c ]; then exec "$FAKE_REAL_PY" "$@"; fi
if [ "$1" = -m ]; then shift 2; fi
echo "$$ $*" >> "$FAKE_CALLS"
out=; prev=
for a in "$@"; do [ "$prev" = --out ] && out=$a; prev=$a; done
echo "fake training: $*"
if [ -n "${FAKE_FAIL_ON:-}" ] && [[ " $* " == *" $FAKE_FAIL_ON "* ]]; then echo "fake: diverged" >&2; exit 3; fi
mode=${FAKE_MODE:-ok}
if [ -n "${FAKE_OK_ON:-}" ] && [[ " $* " == *" $FAKE_OK_ON "* ]]; then mode=ok; fi
case $mode in
  fail) echo "fake: diverged" >&2; exit 3 ;;
  sleep) exec sleep 60 ;;
esac
mkdir -p "$out"
echo '{"test_accuracy": 50.0}' > "$out/metrics.json"
: > "$out/last.safetensors"
echo '{"epoch": 1, "wall_time_s": 0.01}' > "$out/history.jsonl"
"""


@pytest.fixture()
def env(tmp_path):
    fake = tmp_path / "fake"
    fake.write_text(FAKE)
    fake.chmod(0o755)
    (tmp_path / "resnet20.th").write_bytes(b"")
    return {**os.environ, "TTQ": str(fake), "PYTHON": str(fake), "FAKE_REAL_PY": sys.executable,
            "FAKE_CALLS": str(tmp_path / "calls"), "OUT_DIR": str(tmp_path / "out"), "DATA": "/no/such/data.tgz",
            "PRETRAINED": str(tmp_path / "resnet20.th"), "EPOCHS": "1", "MODELS": "resnet20", "FP_EPOCHS": "1"}


def _calls(env) -> list[tuple[int, str]]:
    path = Path(env["FAKE_CALLS"])
    lines = path.read_text().splitlines() if path.exists() else []
    return [(int(pid), args) for pid, _, args in (line.partition(" ") for line in lines)]


def _gone(pid: int) -> bool:
    """The process has ended (a zombie counts as ended: it runs nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


_started: list[int] = []


@pytest.fixture(autouse=True)
def _no_leftovers():
    """After each test (its assertions done), kill whatever a broken script left in the session it ran in."""
    yield
    while _started:
        try:
            os.killpg(_started.pop(), signal.SIGKILL)
        except ProcessLookupError:
            pass


def _default_signals() -> None:
    # A suite started in the background (`.ci/run &` from a script) inherits SIGINT ignored, and bash cannot trap
    # a signal that was ignored when it started: restore the default, as a terminal's foreground job has it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start(args: list[str], env) -> subprocess.Popen:
    # A session (and process group) of its own, so that _no_leftovers finds its processes
    proc = subprocess.Popen(["bash", *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, preexec_fn=_default_signals)
    _started.append(proc.pid)
    return proc


def _finish(proc: subprocess.Popen, timeout: float = 30) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, out, err


def _run(args: list[str], env) -> tuple[int, str, str]:
    return _finish(_start(args, env))


def _wait_for_calls(env, n: int, proc: subprocess.Popen) -> list[tuple[int, str]]:
    deadline = time.monotonic() + 20
    while len(_calls(env)) < n:
        assert proc.poll() is None, f"the script ended early: {proc.communicate()}"
        assert time.monotonic() < deadline, f"only {_calls(env)} started"
        time.sleep(0.05)
    time.sleep(0.2)  # let each fake get from its first line to `exec sleep`
    return _calls(env)


def _started_runs(out: str) -> dict[str, int]:
    """{run folder: PID} from the scripts' "<run>: started (pid N, log L)" lines."""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\S+): started \(pid (\d+), log ", out, re.MULTILINE)}


def _assert_names_failed_run(rc: int, err: str, run: Path, log: Path) -> None:
    assert rc == 3, err
    assert f"training run {run} failed with exit status 3; see its log {log}" in err
    assert "fake: diverged" in log.read_text()


# ---------------------------------------------------------------- a run that fails


def test_first_runs_stops_when_the_fp_run_fails(env, tmp_path):
    env["FAKE_MODE"] = "fail"
    rc, _, err = _run([str(SCRIPTS / "first_runs_resnet20.sh")], env)
    _assert_names_failed_run(rc, err, tmp_path / "out/fp", tmp_path / "out/fp.log")
    assert [args.split()[4] for _, args in _calls(env)] == ["fp"]  # nothing started after the failure


@pytest.mark.skipif(not (REPO / "results/cpu-resnet20/fp/last.safetensors").is_file(),
                    reason="the committed FP model is not in this checkout")
def test_first_runs_without_pretrained_stops_all_runs_when_one_fails(env, tmp_path):
    # The fallback start (no pretrained file) used to write logs into a folder nobody had created.
    env.update(PRETRAINED=str(tmp_path / "missing.th"), FAKE_MODE="sleep", FAKE_FAIL_ON="twn")
    rc, out, err = _run([str(SCRIPTS / "first_runs_resnet20.sh")], env)
    _assert_names_failed_run(rc, err, tmp_path / "out/twn", tmp_path / "out/twn.log")
    started = _started_runs(out)
    assert sorted(started) == [str(tmp_path / "out/ttq"), str(tmp_path / "out/twn")]  # ttq-lr0.1 never started
    assert all(_gone(pid) for pid in started.values())  # the ttq run (sleeping) was stopped, not left behind
    assert "committed results/cpu-resnet20/fp/last.safetensors" in out


def test_first_runs_reports_a_reproduction_that_succeeds(env, tmp_path):
    rc, out, err = _run([str(SCRIPTS / "first_runs_resnet20.sh")], env)
    assert rc == 0, err
    assert [line for line in out.splitlines() if line.endswith(" 50.0")] == \
        ["fp 50.0", "ttq 50.0", "twn 50.0", "ttq-lr0.1 50.0"]
    assert "fake training: train --model resnet20 --method fp" in (tmp_path / "out/fp.log").read_text()
    assert "fake training: train --model resnet20 --method fp" in out  # fp is shown on the terminal too


def test_paper_schedule_stops_when_a_run_fails(env, tmp_path):
    env["FAKE_FAIL_ON"] = "ttq"
    rc, _, err = _run([str(SCRIPTS / "paper_schedule.sh")], env)
    _assert_names_failed_run(rc, err, tmp_path / "out/resnet20-ttq", tmp_path / "out/resnet20-ttq.log")
    assert [args.split()[4] for _, args in _calls(env)] == ["fp", "ttq"]


def test_gpu_script_stops_when_a_run_fails(env, tmp_path):
    env["FAKE_FAIL_ON"] = "twn"
    out_dir = tmp_path / "gpu"
    rc, out, err = _run([str(SCRIPTS / "gpu_resnet20.sh"), "/no/data.tgz", env["PRETRAINED"], str(out_dir)], env)
    _assert_names_failed_run(rc, err, out_dir / "twn", out_dir / "twn.log")
    assert sorted(_started_runs(out)) == [str(out_dir / m) for m in ("fp", "ttq", "twn")]
    assert "epochs each for TTQ and TWN" in out  # the budget step ran with the fp run's history


def test_gpu_script_without_arguments_prints_its_usage(env):
    rc, _, err = _run([str(SCRIPTS / "gpu_resnet20.sh")], env)
    assert rc == 2 and "usage:" in err and "OUT_DIR" in err
    assert _calls(env) == []


# ---------------------------------------------------------------- stopped from outside


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])
@pytest.mark.skipif(not (REPO / "results/cpu-resnet20/fp/last.safetensors").is_file(),
                    reason="the committed FP model is not in this checkout")
def test_first_runs_stopped_by_a_signal_stops_its_runs(env, tmp_path, sig):
    env.update(PRETRAINED=str(tmp_path / "missing.th"), FAKE_MODE="sleep")
    proc = _start([str(SCRIPTS / "first_runs_resnet20.sh")], env)
    try:
        calls = _wait_for_calls(env, 2, proc)  # ttq and twn side by side
        assert not any(_gone(pid) for pid, _ in calls)
        os.kill(proc.pid, sig)  # the script only, as `kill` would; Ctrl-C would reach its runs too
        rc, _, err = _finish(proc, timeout=15)
    finally:
        _finish(proc)
    assert rc == 128 + sig, err
    assert f"stopped by SIG{sig.name[3:]}" in err
    assert all(_gone(pid) for pid, _ in calls)
    assert len(_calls(env)) == 2  # and nothing new was started


def test_paper_schedule_stopped_by_term_stops_its_run(env):
    env["FAKE_MODE"] = "sleep"
    proc = _start([str(SCRIPTS / "paper_schedule.sh")], env)
    try:
        calls = _wait_for_calls(env, 1, proc)
        os.kill(proc.pid, signal.SIGTERM)
        rc, _, err = _finish(proc, timeout=15)
    finally:
        _finish(proc)
    assert rc == 143, err
    assert [pid for pid, _ in calls if not _gone(pid)] == []


def test_gpu_script_stopped_by_term_stops_both_runs(env, tmp_path):
    env.update(FAKE_MODE="sleep", FAKE_OK_ON="fp")  # fp finishes, then ttq and twn run side by side
    out_dir = tmp_path / "gpu"
    proc = _start([str(SCRIPTS / "gpu_resnet20.sh"), "/no/data.tgz", env["PRETRAINED"], str(out_dir)], env)
    try:
        calls = _wait_for_calls(env, 3, proc)
        sleeping = [pid for pid, args in calls if " fp " not in f" {args} "]
        assert len(sleeping) == 2 and not any(_gone(pid) for pid in sleeping)
        os.kill(proc.pid, signal.SIGTERM)
        rc, _, err = _finish(proc, timeout=15)
    finally:
        _finish(proc)
    assert rc == 143, err
    assert all(_gone(pid) for pid in sleeping)
