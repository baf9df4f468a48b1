"""README's main job, scripts/reproduce_resnet20.sh, for real on a tiny synthetic plan: stopped by TERM mid-way it
stops its trainings; called again it finishes the runs it was given (and only those), into its own results
folder, and prints their table beside the committed one."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from processes import processes_naming

REPO = Path(__file__).resolve().parents[1]
TTQ = Path(sys.executable).with_name("ttq")

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or not TTQ.is_file(),
                                reason="needs bash and the installed `ttq` command")

# Named like the project's plan, so the script also prints the committed results/cifar10 table.
PLAN = """
name = "cifar10"
data = "synthetic:64"

[recipes.adapt]
method = "fp"
epochs = 1
batch_size = 32
lr = 0.05

[recipes.fp]
method = "fp"
start_from = "adapt"
epochs = 4
batch_size = 32
lr = 0.02

[recipes.ttq]
method = "ttq"
start_from = "adapt"
epochs = 4
batch_size = 32
lr = 0.1

[recipes.twn]
method = "twn"
start_from = "adapt"
epochs = 4
batch_size = 32
lr = 0.02

[[runs]]
models = ["resnet20"]
seeds = [0, 1]
recipes = ["adapt", "fp", "ttq", "twn"]
"""
SEED0 = ["resnet20-adapt-s0", "resnet20-fp-s0", "resnet20-ttq-s0", "resnet20-twn-s0"]


def _default_signals() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # as a terminal's foreground job has it (see test_scripts)


def _start(env) -> subprocess.Popen:
    return subprocess.Popen(["bash", str(REPO / "scripts/reproduce_resnet20.sh")], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_default_signals)


def _epochs(runs: Path, name: str) -> int:
    history = runs / "cifar10" / name / "history.jsonl"
    return len(history.read_text().splitlines()) if history.is_file() else 0


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the trainings through /proc")
def test_main_job_stops_on_term_resumes_and_reports_only_its_own_runs(tmp_path):
    plan, runs = tmp_path / "cifar10.toml", tmp_path / "runs"
    plan.write_text(textwrap.dedent(PLAN))
    committed = {p: p.stat().st_mtime_ns for p in (REPO / "results").glob("*/*/metrics.json")}
    env = {**os.environ, "PLAN": str(plan), "RESULTS": str(runs), "TTQ": str(TTQ), "PYTHON": sys.executable}

    proc = _start(env)
    try:
        deadline = time.monotonic() + 120
        while not any(_epochs(runs, n) for n in SEED0[1:]):  # a run after the adaptation has an epoch done
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no run got past its first epoch in 2 minutes"
            time.sleep(0.1)
        os.kill(proc.pid, signal.SIGTERM)  # the script alone, as `kill` or a job scheduler would send it
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
    assert proc.returncode == 143, err
    assert "stopped by SIGTERM" in err
    assert processes_naming(runs) == []  # no training left running
    # stopped mid-way: with 2 jobs the third run after the adaptation had not even started
    assert sum(_epochs(runs, n) for n in SEED0[1:]) < 3 * 4

    done = subprocess.run(["bash", str(REPO / "scripts/reproduce_resnet20.sh")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    # seed 0 of every recipe, 4 epochs each (1 for the adaptation), and nothing of seed 1
    assert sorted(p.name for p in (runs / "cifar10").iterdir() if p.is_dir()) == SEED0
    for name in SEED0:
        metrics = json.loads((runs / "cifar10" / name / "metrics.json").read_text())
        assert (metrics["seed"], metrics["recipe"]) == (0, name.split("-")[1])
        assert _epochs(runs, name) == (1 if "adapt" in name else 4)
    assert f"Your runs ({runs}/cifar10):" in done.stdout
    ours, table = done.stdout.split("Beside them, results/cifar10:")
    assert "ResNet-20 (adapt)" in ours and "ResNet-20 (fp)" in ours and "(n=1)" in ours and "(n=3)" not in ours
    assert "(n=3)" in table  # the committed table, read from the repository's results/
    # and the closing sentence says the two tables are of different data
    assert "Your runs used synthetic, the committed runs CIFAR-10 (JPEG copy)" in table
    assert {p: p.stat().st_mtime_ns for p in committed} == committed  # the committed runs were not touched
