"""The reproduction plan and its runner, on synthetic data with tiny budgets.

The key property: a plan cut into many short calls by its time budget ends with exactly the results of one
uninterrupted call (weights tensor for tensor, histories row for row except wall-clock times).
"""
from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from processes import processes_naming
from ttq_lib.cli import main
from ttq_lib.reproduction.plan import PlanError, load_plan
from ttq_lib.reproduction.runner import Runner
from ttq_lib.reproduction.search import best_settings
from ttq_lib.training.history import read_history, without_execution

TINY = """
name = "tiny"
data = "synthetic:96"

[recipes.adapt]
method = "fp"
epochs = 2
batch_size = 32
lr = 0.05
schedule = "cosine"

[recipes.ttq]
method = "ttq"
start_from = "adapt"
epochs = 8
batch_size = 32
lr = 0.05
schedule = "cosine"

[recipes.twn]
method = "twn"
start_from = "adapt"
epochs = 3
batch_size = 32
lr = [0.02, 0.05]
schedule = "cosine"

[[runs]]
models = ["resnet20"]
seeds = [0]
recipes = ["adapt", "ttq", "twn"]
"""


def _plan(tmp_path: Path, text: str = TINY, name: str = "plan.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_plan_names_every_run_and_expands_lists(tmp_path):
    plan = load_plan(_plan(tmp_path))
    assert [r.name for r in plan.runs] == ["resnet20-adapt-s0", "resnet20-ttq-s0", "resnet20-twn-lr0.02-s0",
                                           "resnet20-twn-lr0.05-s0"]
    twn = plan.run("resnet20-twn-lr0.05-s0")
    assert (twn.settings["lr"], twn.after, twn.seed) == (0.05, "resnet20-adapt-s0", 0)
    assert plan.data == "synthetic:96"


@pytest.mark.parametrize("change,message", [
    ('name = "tiny"', "needs name"),
    ('epochs = 2\n', "learning_rate"),
    ('seeds = [0]', "must hold exactly"),
    ('recipes = ["adapt", "ttq", "twn"]', "not defined"),
    ('start_from = "adapt"\nepochs = 3\nbatch_size = 32\nlr = 0.05', "does not run"),
    ('lr = 0.05\nschedule', "must be positive"),
])
def test_bad_plans_are_refused_with_the_reason(tmp_path, change, message):
    text = TINY
    if message == "needs name":
        text = text.replace(change, "")
    elif message == "learning_rate":
        text = text.replace(change, "epochs = 2\nlearning_rate = 0.1\n", 1)
    elif message == "must hold exactly":
        text = text.replace(change, "seed = [0]")
    elif message == "not defined":
        text = text.replace(change, 'recipes = ["adapt", "ttq", "bwn"]')
    elif message == "does not run":
        text = text.replace('recipes = ["adapt", "ttq", "twn"]', 'recipes = ["ttq"]')
    else:
        text = text.replace(change, "lr = -0.05\nschedule", 1)
    with pytest.raises((PlanError, ValueError), match=message.replace("(", r"\(")):
        load_plan(_plan(tmp_path, text))


def _finished(results: Path) -> dict[str, tuple[dict, list]]:
    out = {}
    for run in sorted(p for p in (results / "tiny").iterdir() if p.is_dir()):  # not the runner's .runner.lock
        history = [without_execution(json.loads(line)) for line in (run / "history.jsonl").read_text().splitlines()]
        out[run.name] = (load_file(str(run / "last.safetensors")), history)
    return out


def _epochs_committed(results: Path) -> int:
    return sum(len(h.read_text().splitlines()) for h in (results / "tiny").glob("*/history.jsonl"))


def test_a_plan_cut_by_its_budget_ends_like_an_uninterrupted_one(tmp_path):
    plan_path = _plan(tmp_path)
    only = ["*-ttq-*"]  # the adapt run and the TTQ run that starts from it: 10 epochs in all
    whole = tmp_path / "whole"
    t0 = time.monotonic()
    assert Runner(load_plan(plan_path), whole, jobs=2, only=only, log=lambda line: None).run() == 0
    whole_s = time.monotonic() - t0

    cut = tmp_path / "cut"
    # Each call gets 40 % of what the uninterrupted call took here, so that no machine is fast enough to finish
    # the plan in one call (a fixed 14 s did, on a fast day); a call too short to commit an epoch gets longer.
    calls, lines, budget = 0, [], 0.4 * whole_s
    while calls < 30:
        calls += 1
        before = _epochs_committed(cut)
        runner = Runner(load_plan(plan_path), cut, jobs=2, budget_s=budget, margin_s=1.0, startup_s=2.0,
                        only=only, log=lines.append, poll_s=0.2)
        assert runner.run() == 0
        if all(line.split()[1] == "done" for line in runner.report()):
            break
        if _epochs_committed(cut) == before:  # a loaded machine: no epoch fitted in the call, so give it longer
            budget *= 1.5
    assert calls >= 2, "the budget was never reached: the test would not test stopping"
    assert any("stopped" in line for line in lines)
    # jobs=2, but the TTQ run waits for the adapt run: each ran alone, so each got every core, not half
    started = [line for line in lines if ": started (" in line]  # not "... not started: ... would not fit"
    assert started and all(f"started ({os.cpu_count()} CPU thread(s)" in line for line in started), started
    a, b = _finished(whole), _finished(cut)
    assert a.keys() == b.keys() and len(a) == 2
    for name in a:
        assert a[name][0].keys() == b[name][0].keys()
        assert all(torch.equal(a[name][0][k], b[name][0][k]) for k in a[name][0]), name
        assert a[name][1] == b[name][1], name


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: nothing to split between runs")
def test_a_run_left_alone_takes_the_freed_cores_from_its_next_epoch(tmp_path):
    """The main job's case: after the adaptation three runs can go, two at a time.  TTQ and the first TWN start
    with half the cores each and the second TWN takes the first's place; once it has ended too, TTQ (still
    going) is asked to use every core and does from its next epoch, as its history.jsonl rows record."""
    cores = os.cpu_count()
    plan_path = _plan(tmp_path, TINY.replace("epochs = 8", "epochs = 40", 1).replace("epochs = 3", "epochs = 1", 1))
    lines = []
    runner = Runner(load_plan(plan_path), tmp_path / "r", jobs=2, log=lines.append, poll_s=0.1)
    assert runner.run() == 0
    started = {line.split(":")[0]: line for line in lines if ": started (" in line}
    assert all(f"started ({cores // 2} CPU thread(s)" in started[f"resnet20-{run}-s0"]
               for run in ("ttq", "twn-lr0.02", "twn-lr0.05")), lines
    assert f"resnet20-ttq-s0: {cores} CPU thread(s) from its next epoch" in lines, lines
    threads = [row["threads"] for row in read_history(tmp_path / "r" / "tiny" / "resnet20-ttq-s0")]
    k = threads.index(cores)
    assert 1 <= k < len(threads) and set(threads[:k]) == {cores // 2} and set(threads[k:]) == {cores}, threads
    assert runner._hints is None  # the thread files went with the runner


def test_a_changed_plan_is_refused_for_started_runs(tmp_path):
    plan_path = _plan(tmp_path)
    Runner(load_plan(plan_path), tmp_path / "r", only=["resnet20-adapt-s0"], log=lambda line: None).run()
    changed = _plan(tmp_path, TINY.replace("lr = 0.05\nschedule", "lr = 0.07\nschedule", 1), "changed.toml")
    runner = Runner(load_plan(changed), tmp_path / "r", log=lambda line: None)
    with pytest.raises(ValueError, match="lr: 0.05 -> 0.07"):
        runner.run()


def test_only_runs_the_chosen_and_what_they_start_from(tmp_path, capsys):
    plan_path = _plan(tmp_path)
    rc = main(["reproduce", str(plan_path), "--results", str(tmp_path / "r"), "--only", "*-ttq-*"])
    assert rc == 0
    runs = sorted(p.name for p in (tmp_path / "r" / "tiny").iterdir() if not p.name.startswith("."))
    assert runs == ["resnet20-adapt-s0", "resnet20-ttq-s0"]  # (.runner.lock: the runner's lock file)
    capsys.readouterr()
    assert main(["reproduce", str(plan_path), "--results", str(tmp_path / "r"), "--status"]) == 0
    status = {line.split()[0]: line.split()[1] for line in capsys.readouterr().out.splitlines()}
    assert status == {"resnet20-adapt-s0": "done", "resnet20-ttq-s0": "done", "resnet20-twn-lr0.02-s0": "queued",
                      "resnet20-twn-lr0.05-s0": "queued"}


@pytest.mark.parametrize("argv,message", [
    (["--jobs", "0"], "--jobs 0 must be at least 1"),
    (["--budget-min", "0"], "--budget-min must be positive, got 0"),
    (["--budget-min", "-5"], "--budget-min must be positive, got -5"),
    (["--only", "resnet99-*"], "--only resnet99-* matches no run of plan tiny; runs are named like resnet20-"),
    (["--export", "x", "--import", "y"], "give one of them"),
])
def test_bad_runner_options_are_refused_before_anything_runs(tmp_path, capsys, argv, message):
    plan_path = _plan(tmp_path)
    assert main(["reproduce", str(plan_path), "--results", str(tmp_path / "r"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()  # no folder, no lock, no run started


def test_the_committed_plans_load_and_give_ttq_and_twn_one_recipe():
    root = Path(__file__).resolve().parent.parent / "reproduce"
    plan = load_plan(root / "cifar10.toml")
    assert {r.model for r in plan.runs} == {"resnet20", "resnet32", "resnet44", "resnet56"}
    assert {r.seed for r in plan.runs if r.model == "resnet20"} == {0, 1, 2}
    # the learning rates are the committed search's best (one search, ResNet-20, used at every depth)
    best = best_settings(root.parent / "results" / "cifar10-lr-search")
    own = ("method", "lr", "scale_lr")  # what the search chose per method; the rest is one budget for all
    compared = [r for r in plan.runs if r.recipe in ("fp", "ttq", "twn")]
    assert {r.recipe for r in compared} == {"fp", "ttq", "twn"}  # the FP control runs beside TTQ and TWN
    for run in compared:  # same budget and schedule, from the same adapted model
        other = plan.run(f"{run.model}-ttq-s{run.seed}")
        assert {k: v for k, v in run.settings.items() if k not in own} == \
            {k: v for k, v in other.settings.items() if k not in own}
        assert run.after == f"{run.model}-adapt-s{run.seed}"
        chosen = best["resnet20", run.settings["method"]]
        assert run.settings["lr"] == chosen["lr"] and run.settings.get("scale_lr") == chosen.get("scale_lr")
    search = load_plan(root / "cifar10-lr-search.toml")
    lrs = {m: sorted(r.settings["lr"] for r in search.runs if r.recipe.startswith(m)
                     and r.settings.get("scale_lr") in (None, 0.001)) for m in ("fp", "ttq", "twn")}
    assert lrs["fp"] == lrs["ttq"] == lrs["twn"] == [0.02, 0.05, 0.1]  # one grid for all three
    assert all(r.settings["holdout"] == 5000 for r in search.runs)


def test_a_second_runner_on_the_same_plan_is_refused_and_status_sees_the_first(tmp_path, capsys):
    """A real `ttq reproduce` process holds the plan: a second runner is refused, naming the first's process,
    and `--status` shows the first one's run as running; once the first is killed (SIGKILL: the kernel drops
    its lock) the status says stopped and a new runner could start."""
    import signal
    import subprocess
    import sys
    import time

    from ttq_lib.reproduction.plan_lock import PlanBusy

    plan_path = _plan(tmp_path, TINY.replace("epochs = 2", "epochs = 400", 1))  # an adapt run that lasts
    results = tmp_path / "results"
    args = ["reproduce", str(plan_path), "--results", str(results), "--only", "resnet20-adapt-s0"]
    first = subprocess.Popen([sys.executable, "-m", "ttq_lib.cli", *args], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        state = results / "tiny" / ".runner.json"
        for _ in range(1200):  # until the first runner has started its training
            if state.is_file() and json.loads(state.read_text())["running"]:
                break
            time.sleep(0.1)
        else:
            pytest.fail("the first runner never started its run")
        with pytest.raises(PlanBusy, match=rf"is being run by another `ttq reproduce` \(process {first.pid}\)"):
            Runner(load_plan(plan_path), results, only=["resnet20-adapt-s0"], log=lambda line: None).run()
        assert main(args + ["--status"]) == 0
        out = capsys.readouterr().out.splitlines()
        assert out[0] == f"(another `ttq reproduce`, process {first.pid}, is running this plan)"
        assert out[1].split()[:2] == ["resnet20-adapt-s0", "running"], out
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the runner, as a crash would
        first.wait()
    # Its training runs in a session of its own (out of reach of that kill): the kernel must end it too
    # (PR_SET_PDEATHSIG), or it would train on beside the next runner's training of the same folder.
    for _ in range(600):
        if not processes_naming(results):
            break
        time.sleep(0.1)
    else:
        pids = processes_naming(results)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        pytest.fail(f"the training outlived its killed runner: processes {pids}")
    assert main(args + ["--status"]) == 0
    out = capsys.readouterr().out
    assert "is running this plan" not in out and out.split()[:2] == ["resnet20-adapt-s0", "stopped"], out


def _write_history(folder: Path, rows: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_epoch_time_estimates_come_from_the_epochs_run_on_the_asked_device(tmp_path):
    from ttq_lib.reproduction.run_state import progress
    # wall_time_s is cumulative over a run's sessions: 2 CPU epochs of 400 s, then 2 GPU epochs of 15 and 14 s
    _write_history(tmp_path, [{"epoch": 1, "wall_time_s": 400.0, "device": "cpu"},
                              {"epoch": 2, "wall_time_s": 800.0, "device": "cpu"},
                              {"epoch": 3, "wall_time_s": 815.0, "device": "cuda:H100"},
                              {"epoch": 4, "wall_time_s": 829.0, "device": "cuda:H100"}])
    assert progress(tmp_path, 12, "cuda:H100").epoch_s == pytest.approx(14.5)
    assert progress(tmp_path, 12, "cpu").epoch_s == pytest.approx(400.0)
    assert progress(tmp_path, 12).epoch_s == pytest.approx(829.0 / 4)
    assert progress(tmp_path, 12, "cuda:A100").epoch_s is None  # never ran there: no estimate
    assert progress(tmp_path, 12).epochs_done == 4


def test_a_run_too_slow_for_the_budget_here_is_named_and_one_slow_elsewhere_is_started(tmp_path):
    import time

    from ttq_lib.training.config import save_config
    lines = []
    runner = Runner(load_plan(_plan(tmp_path)), tmp_path / "r", budget_s=120, only=["resnet20-adapt-s0"],
                    log=lines.append)
    run = runner.plan.run("resnet20-adapt-s0")
    folder = runner.folder(run)
    folder.mkdir(parents=True)
    save_config(runner.config(run), folder)
    assert lines == ["data: synthetic:96 (synthetic (asked for by name))"]  # said once, when first resolved
    lines.clear()
    deadline = time.time() + 100
    # one epoch of 10,000 s on this machine: not started, and the log says why
    _write_history(folder, [{"epoch": 1, "wall_time_s": 10000.0, "device": runner.device_label}])
    assert runner._runnable(deadline) == []
    assert len(lines) == 1 and lines[0].startswith("resnet20-adapt-s0: not started") and "10020 s" in lines[0]
    assert runner._runnable(deadline) == [] and len(lines) == 1  # said once
    # the same epoch measured on another machine says nothing about this one: it is started
    _write_history(folder, [{"epoch": 1, "wall_time_s": 10000.0, "device": "cuda:Some other GPU"}])
    assert [r.name for r in runner._runnable(deadline)] == ["resnet20-adapt-s0"]


def test_a_run_never_run_is_budgeted_on_its_plans_other_runs_of_the_same_model(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    lines = []
    runner = Runner(load_plan(_plan(tmp_path)), tmp_path / "r", budget_s=1000, only=["resnet20-twn-lr0.02-s0"],
                    log=lines.append)
    here = runner.device_label
    folder = {name: runner.folder(runner.plan.run(f"resnet20-{name}-s0")) for name in ("adapt", "ttq", "twn-lr0.05")}
    twn = runner.plan.run("resnet20-twn-lr0.02-s0")
    assert runner._estimate(twn) is None  # nothing measured yet: start-up alone is budgeted
    # the adaptation ran alone on both cores (300 and 310 s an epoch), TTQ beside another run on one (500 s)
    _write_history(folder["adapt"], [{"epoch": 1, "wall_time_s": 300.0, "device": here, "threads": 2},
                                     {"epoch": 2, "wall_time_s": 610.0, "device": here, "threads": 2}])
    (folder["adapt"] / "metrics.json").write_text("{}")
    _write_history(folder["ttq"], [{"epoch": 1, "wall_time_s": 500.0, "device": here, "threads": 1}])
    assert runner._estimate(twn) == 300.0  # alone it gets 2 threads: the epochs run on 2 come first
    runner.jobs, runner.procs = 2, {"resnet20-ttq-s0": None}  # beside a run going: 1 thread, as TTQ had
    assert runner._estimate(twn) == 500.0
    runner.jobs, runner.procs = 1, {}
    # a run of its own method on the same threads is the better guess; another machine's epochs are no guess
    _write_history(folder["twn-lr0.05"], [{"epoch": 1, "wall_time_s": 200.0, "device": here, "threads": 2},
                                          {"epoch": 2, "wall_time_s": 300.0, "device": "cuda:Some GPU", "threads": 2}])
    assert runner._estimate(twn) == 200.0
    # scaled from one thread to two as if twice as fast, never slower: 500 s on 1 thread counts as 250 s
    for name in ("adapt", "twn-lr0.05"):
        _write_history(folder[name], [{"epoch": e, "wall_time_s": 600.0 * e, "device": here, "threads": 1}
                                      for e in (1, 2)])
    assert runner._estimate(twn) == 300.0  # its own method, 600 s on one thread
    (folder["twn-lr0.05"] / "history.jsonl").unlink()
    assert runner._estimate(twn) == 250.0  # the fastest of the other methods: TTQ's
    # the estimate decides the start: start-up (20 s) and 250 s fit in 300 s, not in 200 s
    assert runner._runnable(time.time() + 200) == []
    assert len(lines) == 1 and "about 270 s on" in lines[0] and "from the plan's other resnet20 runs" in lines[0]
    assert [r.name for r in runner._runnable(time.time() + 300)] == ["resnet20-twn-lr0.02-s0"]


def test_a_start_file_may_name_the_runs_model_and_seed(tmp_path):
    """The budget plan starts every run from another plan's adapted model of the same depth and seed."""
    plan = _plan(tmp_path, """
name = "longer"
data = "synthetic:96"

[recipes.ttq]
method = "ttq"
start_from = "elsewhere/{model}-adapt-s{seed}/last.safetensors"
epochs = 3
batch_size = 32

[[runs]]
models = ["resnet20", "resnet32"]
seeds = [0, 2]
recipes = ["ttq"]
""")
    starts = {r.name: r.start_from for r in load_plan(plan).runs}
    assert starts == {f"{m}-ttq-s{s}": str(tmp_path / f"elsewhere/{m}-adapt-s{s}/last.safetensors")
                      for m in ("resnet20", "resnet32") for s in (0, 2)}
    budget = load_plan(Path(__file__).resolve().parents[1] / "reproduce/cifar10-budget.toml")
    for run in budget.runs:
        if run.model == "resnet20":  # the committed adapted models it starts from are there
            assert Path(run.start_from).is_file(), run.start_from
            assert run.settings["epochs"] == 36 and run.settings["schedule"] == "cosine"
