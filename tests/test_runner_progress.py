"""What `ttq reproduce` shows its user: the plan and its time estimate before anything starts, live progress on a
terminal (redrawn in place) and in a pipe (plain lines), each run's result beside the committed run's."""
from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import shutil
import struct
import subprocess
import sys
import termios
import textwrap
import time
from pathlib import Path

import pytest

from ttq_lib.reproduction.estimate import Job, duration, scaled_mean, simulate
from ttq_lib.reproduction.outlook import committed_twin
from ttq_lib.reproduction.plan import load_plan
from ttq_lib.reproduction.runner import Runner

TTQ = Path(sys.executable).with_name("ttq")

PLAN = """
name = "tiny"
data = "synthetic:96"

[recipes.adapt]
method = "fp"
epochs = 2
batch_size = 32
lr = 0.05

[recipes.fp]
method = "fp"
start_from = "adapt"
epochs = 12
batch_size = 32
lr = 0.02

[recipes.ttq]
method = "ttq"
start_from = "adapt"
epochs = 12
batch_size = 32
lr = 0.05

[recipes.twn]
method = "twn"
start_from = "adapt"
epochs = 12
batch_size = 32
lr = 0.02

[[runs]]
models = ["resnet20"]
seeds = [0]
recipes = ["adapt", "fp", "ttq", "twn"]
"""


# One run, from scratch: what the live display is tested on (a process start costs seconds on 2 cores)
LIVE = """
name = "tiny"
data = "synthetic:96"

[recipes.ttq]
method = "ttq"
epochs = 6
batch_size = 32
lr = 0.05

[[runs]]
models = ["resnet20"]
seeds = [0]
recipes = ["ttq"]
"""


def _plan(tmp_path: Path, text: str = PLAN) -> Path:
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(text))
    return path


def _history(folder: Path, spans: list[tuple[float, int]]) -> None:
    """history.jsonl rows whose epochs took ``spans`` (seconds, threads) on this CPU."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, wall = [], 0.0
    for epoch, (seconds, threads) in enumerate(spans, 1):
        wall += seconds
        rows.append({"epoch": epoch, "wall_time_s": wall, "threads": threads, "device": "cpu", "test_acc": 50.0})
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_durations_read_as_an_estimate_deserves():
    assert [duration(s) for s in (4.4, 89, 91, 1500, 3600, 3800, 7290)] == \
        ["4 s", "89 s", "2 min", "25 min", "1 h 00 min", "1 h 03 min", "2 h 02 min"]


def test_epoch_times_measured_on_other_thread_counts_are_scaled_as_one_over_threads():
    assert scaled_mean([(100.0, 1), (60.0, 2)], 2) == pytest.approx((50.0 + 60.0) / 2)
    assert scaled_mean([(100.0, 2)], 1) == pytest.approx(200.0)
    assert scaled_mean([], 1) is None


def test_the_schedule_follows_the_runners_rules():
    """Worked by hand: an adaptation (1 epoch left, 100 s on 2 threads) alone on both cores; then three runs, two
    at a time on one thread each; when the first ends the third starts beside the second on one thread, and when
    the second ends the third takes both cores for the rest."""
    per_thread = lambda seconds_on_one: (lambda th: seconds_on_one / th)  # noqa: E731
    jobs = [Job("adapt", 1, per_thread(200), startup_s=20),
            Job("fp", 12, per_thread(200), "adapt", 20),
            Job("ttq", 10, per_thread(200), "adapt", 20),
            Job("twn", 11, per_thread(100), "adapt", 20)]
    plan = simulate(jobs, slots=2, cores=2)
    assert plan["adapt"] == pytest.approx((0, 120, 2))
    assert plan["fp"] == pytest.approx((120, 120 + 20 + 12 * 200, 1))
    assert plan["ttq"] == pytest.approx((120, 120 + 20 + 10 * 200, 1))
    # twn: starts at 2140 on one thread: 20 s start-up, 380 s = 3.8 epochs by 2540, when fp ends; 7.2 epochs left
    # at 50 s on two threads
    assert plan["twn"] == pytest.approx((2140, 2540 + 7.2 * 50, 1))
    # on a GPU the runs going share the card: two runs of 10 s each alone take 20 s each side by side
    gpu = simulate([Job("a", 1, lambda th: 10.0), Job("b", 1, lambda th: 10.0)], slots=2, cores=16,
                   shared_device=True)
    assert gpu["a"][1] == pytest.approx(20.0) and gpu["b"][1] == pytest.approx(20.0)


def test_the_plan_is_estimated_from_a_history_with_known_epoch_times(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    lines = []
    runner = Runner(load_plan(_plan(tmp_path)), tmp_path / "r", jobs=2, device="cpu", log=lines.append)
    folder = lambda recipe: runner.folder(runner.plan.run(f"resnet20-{recipe}-s0"))  # noqa: E731
    _history(folder("adapt"), [(100.0, 2)])                    # 1 of 2 epochs
    _history(folder("ttq"), [(200.0, 1), (100.0, 2)])          # 200 s an epoch on one thread
    _history(folder("twn"), [(50.0, 2)])                       # 100 s on one thread
    # fp has no epoch: it is estimated from the plan's other full-precision run of the model, the adaptation
    text = "\n".join(runner.outlook.plan_lines())
    assert "Plan tiny: 4 run(s) to do" in text and "at most 2 at a time, on cpu, 2 CPU core(s)" in text
    assert re.search(r"resnet20-adapt-s0\s+1 epoch\(s\) \(1 done\)\s+100 s/epoch \(its own 1 epoch\(s\) here, "
                     r"at 2 threads\); ends after about 2 min", text), text
    assert re.search(r"resnet20-fp-s0\s+12 epoch\(s\)\s+200 s/epoch \(resnet20-adapt-s0's epochs here, at 1 thread\)",
                     text), text
    assert re.search(r"resnet20-ttq-s0\s+10 epoch\(s\) \(2 done\)\s+200 s/epoch \(its own 2 epoch\(s\) here", text)
    # the schedule of test_the_schedule_follows_the_runners_rules: 2540 + 360 s = 48 min
    assert "Estimated time: about 48 min (start-up 20 s per run; an epoch's time measured at one thread count is " \
           "scaled as 1/threads" in text
    assert not (tmp_path / "r" / "tiny" / ".runner.lock").exists() and lines == []  # it only looked


def _tiny_plan_run(tmp_path: Path, stdout, stderr, extra=()) -> subprocess.Popen:
    return subprocess.Popen([str(TTQ), "reproduce", str(_plan(tmp_path, LIVE)), "--results", str(tmp_path / "r"),
                             *extra],
                            stdout=stdout, stderr=stderr, cwd=tmp_path, text=stdout is subprocess.PIPE)


def _finish_line(results: Path, name: str) -> str:
    metrics = json.loads((results / "tiny" / name / "metrics.json").read_text())
    return f"{name}: done, test accuracy {metrics['test_accuracy']:.2f} % after {metrics['epochs']} epochs"


@pytest.fixture(scope="module")
def piped(tmp_path_factory):
    """The live plan run with its output in a pipe, as in CI or under nohup: (its folder, stdout)."""
    if not TTQ.is_file():
        pytest.skip("needs the installed `ttq` command")
    tmp_path = tmp_path_factory.mktemp("piped")
    proc = _tiny_plan_run(tmp_path, subprocess.PIPE, subprocess.PIPE, ["--progress-every", "1"])
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return tmp_path, out


def test_progress_in_a_pipe_is_plain_lines_every_few_seconds(piped):
    tmp_path, out = piped
    lines = out.splitlines()
    first_start = next(i for i, line in enumerate(lines) if ": started (" in line)
    assert any(line.startswith("Plan tiny: 1 run(s) to do") for line in lines[:first_start])
    assert any(line.startswith("Estimated time: about ") for line in lines[:first_start])
    live = [line for line in lines if re.match(r"\d\d:\d\d:\d\d  resnet20-ttq-s0\s+epoch \d+/6  ", line)]
    assert len(live) >= 3, out  # 6 epochs of TTQ take well over 3 s
    assert any(re.search(r"epoch \d+/6  (step \d+/3|evaluating)  test \d+\.\d\d % \(epoch \d+\), about .+ left",
                         line) for line in live), live
    assert any(re.match(r"\d\d:\d\d:\d\d  overall: 0 of 1 runs done, about .+ left", line) for line in lines)
    assert _finish_line(tmp_path / "r", "resnet20-ttq-s0") in lines
    assert "\r" not in out and "\x1b" not in out  # no control codes in a log file


def _pty_output(proc: subprocess.Popen, master: int, timeout: float) -> bytes:
    out, deadline = b"", time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([master], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the other side closed: the command ended
                break
            if not chunk:
                break
            out += chunk
        elif proc.poll() is not None:
            break
    return out


@pytest.mark.skipif(not TTQ.is_file(), reason="needs the installed `ttq` command")
def test_progress_on_a_terminal_is_redrawn_in_place(tmp_path):
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 200, 0, 0))  # a 200-column terminal
    proc = _tiny_plan_run(tmp_path, slave, slave)
    os.close(slave)
    try:
        out = _pty_output(proc, master, 300).decode(errors="replace")
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.wait() == 0, out
    assert out.index("Plan tiny: 1 run(s) to do") < out.index(": started (")
    # tqdm's positioned bars: each redraw moves the cursor back up (ESC [ A) over the lines it drew
    assert out.count("\x1b[A") > 10
    assert re.search(r"\rresnet20-ttq-s0  epoch \d+/6  (step \d+/3|evaluating)  test \d+\.\d\d % \(epoch \d+\)", out)
    assert re.search(r"\roverall: 0 of 1 runs done", out)
    assert _finish_line(tmp_path / "r", "resnet20-ttq-s0") in out  # event lines are written above the bars


def test_a_finished_run_is_shown_beside_the_committed_run_of_the_same_plan_data_and_seed(piped, tmp_path):
    shutil.copytree(piped[0] / "r", tmp_path / "committed")
    shutil.copytree(piped[0] / "r", tmp_path / "mine")
    runner = Runner(load_plan(_plan(tmp_path, LIVE)), tmp_path / "mine")
    run, mine = runner.plan.run("resnet20-ttq-s0"), tmp_path / "mine/tiny/resnet20-ttq-s0"
    theirs = tmp_path / "committed/tiny/resnet20-ttq-s0"
    (theirs / "metrics.json").write_text(json.dumps({**json.loads((theirs / "metrics.json").read_text()),
                                                      "test_accuracy": 12.345}))  # to tell the two apart
    assert runner.outlook.finish_line(run, tmp_path / "committed") == _finish_line(tmp_path / "mine", run.name) + \
        "; the committed run (same plan, data and seed): 12.35 %"
    assert runner.outlook.finish_line(run, None) == _finish_line(tmp_path / "mine", run.name)
    assert committed_twin(mine, theirs)["test_accuracy"] == 12.345
    # another recipe, other data or another seed is not the same run: nothing is put beside it
    for key, value in (("lr", 0.07), ("seed", 5)):
        config = json.loads((mine / "config.json").read_text())
        (mine / "config.json").write_text(json.dumps({**config, key: value}))
        assert committed_twin(mine, theirs) is None, key
        (mine / "config.json").write_text(json.dumps(config))
    assert committed_twin(mine, theirs) is not None  # the loop above put everything back
    metrics = json.loads((mine / "metrics.json").read_text())
    (mine / "metrics.json").write_text(json.dumps({**metrics, "data_test_sha256": "0" * 64}))
    assert committed_twin(mine, theirs) is None
    assert committed_twin(mine, mine) is None  # a run is not its own committed twin


@pytest.mark.skipif(not TTQ.is_file(), reason="needs the installed `ttq` command")
def test_dry_run_prints_the_plan_and_its_estimate_and_touches_nothing(tmp_path):
    done = subprocess.run([str(TTQ), "reproduce", str(_plan(tmp_path, LIVE)), "--results", str(tmp_path / "r"),
                           "--dry-run"], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "data: synthetic:96"
    assert lines[1].startswith("Plan tiny: 1 run(s) to do in ")
    assert re.search(r"resnet20-ttq-s0  6 epoch\(s\) .* s/epoch \(steps timed here, at \d threads?\); ends after "
                     r"about \d+ (s|min)$", lines[2]), lines[2]
    assert lines[3].startswith("Estimated time: about ") and len(lines) == 4
    assert not (tmp_path / "r").exists()
