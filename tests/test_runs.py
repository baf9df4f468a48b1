"""ttq_lib.course.runs and training.history: summaries of committed runs, the epoch-0 row, per-layer series of a history."""
import json
from pathlib import Path

import pytest

import ttq_lib
from ttq_lib.course import runs, workbook
from ttq_lib.training import history
from ttq_lib.formats import save_checkpoint


def _write_run(run: Path, method="ttq", epochs=3, done=3, complete=True, checkpoint=True):
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "resnet20", "method": method, "epochs": epochs}))
    rows = [{"epoch": e + 1, "test_acc": 50.0 + e, "train_loss": 1.0 / (e + 1), "layers": [], "hist": {}}
            for e in range(done)]
    (run / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if complete:
        (run / "metrics.json").write_text(json.dumps({"model": "resnet20", "method": method,
                                                      "test_accuracy": 49.0 + done, "device": "cpu"}))
    if checkpoint:
        (run / "last.safetensors").write_bytes(b"")


def test_run_summary_complete_in_progress_and_not_started(fake_repo):
    root = fake_repo
    _write_run(root / "results/a/done", done=3)
    _write_run(root / "results/a/running", epochs=12, done=2, complete=False)
    _write_run(root / "results/a/new", done=0, complete=False)
    done = runs.run_summary(root / "results/a/done", root)
    assert done["status"] == "complete" and done["test_acc"] == 52.0 and done["run"] == "a/done"
    assert done["paper_error"] == 8.87 and done["test_error"] == pytest.approx(48.0)
    running = runs.run_summary(root / "results/a/running", root)
    assert running["status"] == "in progress" and running["test_acc"] == 51.0
    assert (running["epochs_done"], running["epochs_planned"]) == (2, 12)
    new = runs.run_summary(root / "results/a/new", root)
    assert new["status"] == "not started" and new["test_acc"] is None and new["test_error"] is None
    (root / "results/a/running/STOPPED").write_text("given up: diverged\n")
    assert runs.run_summary(root / "results/a/running", root)["status"] == "stopped"
    assert [r["run"] for r in runs.results_summary(root)] == ["a/done", "a/new", "a/running"]


def test_default_run_dir_prefers_a_complete_cpu_run(fake_repo):
    root = fake_repo
    lr01, cpu, gpu = (root / c for c in runs.RUN_CANDIDATES)
    with pytest.raises(FileNotFoundError):
        runs.default_run_dir(root)
    _write_run(gpu)
    _write_run(cpu, epochs=12, done=4, complete=False)
    assert runs.default_run_dir(root) == gpu  # the CPU run is still in progress
    (cpu / "metrics.json").write_text("{}")
    assert runs.default_run_dir(root) == cpu
    _write_run(lr01, epochs=12, done=12, complete=True)
    assert runs.default_run_dir(root) == lr01  # the lr 0.1 run, where the scales move, comes first


def test_layer_series_network_shares_and_pick_layers(history_rows):
    h = history_rows
    assert history.layer_series(h, "layer1.0.conv1", "wp") == ([1, 2, 3], [2.0, 3.0, 4.0])
    assert history.network_shares(h[0])["zero"] == pytest.approx((0.5 * 100 + 0.1 * 300) / 400)
    assert history.layer_series(h, "*", "zero")[1][0] == pytest.approx(0.2)
    assert history.layer_names(h) == ["layer1.0.conv1", "layer3.2.conv2"]
    picked = runs.pick_layers([f"layer{s}.{b}.conv{c}" for s in (1, 2, 3) for b in range(3) for c in (1, 2)])
    assert picked == {"first residual conv": "layer1.0.conv1", "middle conv": "layer2.1.conv2",
                      "last conv": "layer3.2.conv2"}
    assert runs.pick_layers(["layer1.0.conv1", "linear"])["linear"] == "linear"


def test_start_row_rebuilds_epoch_zero(fake_repo):
    root = fake_repo
    fp = ttq_lib.resnet20()
    save_checkpoint(root / "fp.safetensors", fp)
    run = root / "results/x/ttq"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "resnet20", "method": "ttq", "init": "fp.safetensors",
                                                 "t": 0.05, "epochs": 1, "unknown_key": 1}))
    row = runs.start_row(run, root)
    assert row["epoch"] == 0 and len(row["layers"]) == 18
    assert all(r["wp"] == 1.0 and r["wn"] == 1.0 for r in row["layers"])
    assert len(row["hist"]["layer1.0.conv1"]) == 64
    (run / "config.json").write_text(json.dumps({"model": "resnet20", "method": "ttq", "init": "nowhere/x.th"}))
    assert runs.start_row(run, root) is None
    assert workbook.resolve_start_checkpoint(None, root) is None


def test_reproduction_table_uses_the_plan_once_a_run_finished(fake_repo):
    root = fake_repo
    _write_run(root / "results/cpu-resnet20/fp", method="fp", done=2)
    _write_run(root / "results/cpu-resnet20/ttq", done=3)
    empty = runs.reproduction_table(root)
    assert empty["finished"] == 0 and empty["markdown"] is None and empty["fallback"] == "results/cpu-resnet20"
    assert [(r["run"], r["method"], r["test_acc"]) for r in empty["fallback_rows"]] == [
        ("cpu-resnet20/fp", "fp", 51.0), ("cpu-resnet20/ttq", "ttq", 52.0)]
    _write_run(root / "results/cifar10/resnet20-adapt-s0", method="fp", epochs=2, done=1, complete=False)
    assert runs.reproduction_table(root)["finished"] == 0   # a run still going is not a result
    (root / "results/cifar10/resnet20-adapt-s0/metrics.json").write_text(json.dumps(
        {"model": "resnet20", "method": "fp", "test_accuracy": 87.0, "seed": 0, "epochs": 2}))
    table = runs.reproduction_table(root)
    assert table["finished"] == 1 and table["fallback_rows"] is None
    row = next(line for line in table["markdown"].splitlines() if line.startswith("| ResNet-20"))
    assert "13.00 (n=1)" in row and "8.23" in row   # our FP error beside the paper's


def test_gap_curves_take_the_finished_ternary_runs_of_one_model_and_the_mean_of_its_fp_runs(fake_repo):
    root = fake_repo
    for seed, done in ((0, 3), (1, 3)):
        _write_run(root / f"results/cifar10/resnet20-adapt-s{seed}", method="fp", done=done)
        (root / f"results/cifar10/resnet20-adapt-s{seed}/metrics.json").write_text(json.dumps(
            {"model": "resnet20", "method": "fp", "test_accuracy": 87.0 + seed}))
    for method in ("twn", "ttq"):
        _write_run(root / f"results/cifar10/resnet20-{method}-s0", method=method, done=3)
    _write_run(root / "results/cifar10/resnet20-ttq-s1", method="ttq", epochs=12, done=2, complete=False)
    _write_run(root / "results/cifar10/resnet56-ttq-s0", method="ttq", done=3)
    _write_run(root / "results/cifar10/resnet20-fp-s0", method="fp", done=3)  # the same-budget FP control
    (root / "results/cifar10/resnet20-fp-s0/metrics.json").write_text(json.dumps(
        {"model": "resnet20", "method": "fp", "test_accuracy": 88.4}))
    for run in (root / "results/cifar10").iterdir():  # seed and recipe come from config.json
        cfg = json.loads((run / "config.json").read_text())
        cfg["seed"] = int(run.name[-1])
        cfg["model"], cfg["recipe"] = run.name.split("-")[:2]
        (run / "config.json").write_text(json.dumps(cfg))
    curves, fp = runs.gap_curves(root, "cifar10", "resnet20")
    assert fp == pytest.approx(87.5)  # the mean of the two adapted FP runs' final accuracies, not the control's
    assert runs.gap_curves(root, "cifar10", "resnet20", reference="fp")[1] == pytest.approx(88.4)
    assert runs.gap_curves(root, "cifar10", "resnet20", reference=None)[1] == pytest.approx((87 + 88 + 88.4) / 3)
    # the FP control drawn beside TTQ and TWN against the adapted models; the adapted runs are not drawn
    assert list(runs.gap_curves(root, "cifar10", "resnet20", methods=("fp", "ttq", "twn"))[0]) == \
        ["FP, seed 0", "TTQ, seed 0", "TWN, seed 0"]
    assert list(curves) == ["TTQ, seed 0", "TWN, seed 0"]  # unfinished and other-depth runs left out; TTQ first
    assert [r["test_acc"] for r in curves["TTQ, seed 0"]] == [50.0, 51.0, 52.0]
    with pytest.raises(FileNotFoundError, match="no finished full-precision resnet32"):
        runs.gap_curves(root, "cifar10", "resnet32")
