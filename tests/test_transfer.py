"""Run folders carried between machines: `ttq reproduce --export` / `--import` and scripts/device_reproduce.sh."""
import hashlib
import json
import os
import random
import subprocess
import textwrap
from pathlib import Path

import pytest

from ttq_lib.cli import main
from ttq_lib.reproduction.transfer import export_plan, import_plan

ROOT = Path(__file__).resolve().parents[1]


def make_run(plan_dir: Path, name: str, epochs: int, finished: bool, seed: int = 0) -> Path:
    """A run folder as training leaves it: history rows, checkpoint, state.pt; metrics.json once finished.
    The checkpoint and state hold incompressible bytes, so the export really is cut into parts."""
    run = plan_dir / name
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": "resnet20", "method": "ttq", "epochs": 4}))
    (run / "history.jsonl").write_text("".join(json.dumps({"epoch": e + 1}) + "\n" for e in range(epochs)))
    rng = random.Random(f"{name}{epochs}{seed}")
    (run / "last.safetensors").write_bytes(rng.randbytes(64_000))
    (run / "state.pt").write_bytes(rng.randbytes(96_000))
    if finished:
        (run / "metrics.json").write_text(json.dumps({"test_accuracy": 90.0}))
    return run


def digest(folder: Path) -> dict:
    return {str(f.relative_to(folder)): hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(folder.rglob("*")) if f.is_file()}


def test_export_import_round_trip_drops_only_finished_state(tmp_path):
    away = tmp_path / "away" / "cifar10"
    make_run(away, "resnet20-ttq-s0", 4, finished=True)
    make_run(away, "resnet20-twn-s0", 2, finished=False)
    (away / ".runner.lock").write_text("")
    files = export_plan(away, tmp_path / "out", part_mib=0.05)
    names = [p.name for p in files]
    # 2 x 64 kB + 96 kB of incompressible bytes: 5 parts of at most 50 kB, then the manifest
    assert names == [f"cifar10.tar.gz.{i:03d}" for i in range(5)] + ["cifar10.manifest.json"]
    assert all(p.stat().st_size <= 0.05 * 2 ** 20 for p in files)
    home = tmp_path / "home"
    lines = import_plan(tmp_path / "out", home, "cifar10")
    assert lines == ["resnet20-ttq-s0: added (finished)", "resnet20-twn-s0: added (epoch 2)"]
    want = digest(away)
    del want["resnet20-ttq-s0/state.pt"], want[".runner.lock"]  # only resuming needs state.pt
    assert digest(home / "cifar10") == want


def test_import_keeps_finished_and_further_runs_and_takes_further_incoming(tmp_path):
    away, home = tmp_path / "away" / "p", tmp_path / "home" / "p"
    make_run(away, "a-s0", 4, finished=True)     # home: unfinished at epoch 1 -> replaced
    make_run(away, "b-s0", 2, finished=False)    # home: finished -> kept
    make_run(away, "c-s0", 1, finished=False)    # home: epoch 3 -> kept
    make_run(away, "d-s0", 3, finished=False)    # home: epoch 2 -> replaced
    make_run(home, "a-s0", 1, finished=False, seed=1)
    make_run(home, "b-s0", 4, finished=True, seed=1)
    make_run(home, "c-s0", 3, finished=False, seed=1)
    make_run(home, "d-s0", 2, finished=False, seed=1)
    before = {name: digest(home / name) for name in ("b-s0", "c-s0")}
    export_plan(away, tmp_path / "out")
    lines = import_plan(tmp_path / "out", tmp_path / "home", "p")
    assert lines == ["a-s0: updated to finished (was epoch 1)", "b-s0: kept (finished here)",
                     "c-s0: kept (epoch 3 here, 1 incoming)", "d-s0: updated to epoch 3 (was epoch 2)"]
    assert {name: digest(home / name) for name in ("b-s0", "c-s0")} == before
    assert digest(home / "d-s0") == digest(away / "d-s0")
    assert not [p for p in home.iterdir() if p.name.startswith(".import-")]  # no leftovers


def test_a_damaged_or_incomplete_export_is_refused_and_changes_nothing(tmp_path):
    away = tmp_path / "away" / "p"
    make_run(away, "a-s0", 2, finished=False)
    parts = export_plan(away, tmp_path / "out", part_mib=0.05)
    data = bytearray(parts[1].read_bytes())
    data[100] ^= 1
    parts[1].write_bytes(bytes(data))
    with pytest.raises(ValueError, match="do not match p.manifest.json"):
        import_plan(tmp_path / "out", tmp_path / "home", "p")
    parts[1].unlink()
    assert main(["reproduce", str(ROOT / "reproduce/cifar10.toml"), "--results", str(tmp_path),
                 "--import", str(tmp_path / "out")]) == 2  # no cifar10 manifest there
    with pytest.raises(FileNotFoundError, match="lacks part"):
        import_plan(tmp_path / "out", tmp_path / "home", "p")
    assert not (tmp_path / "home" / "p").exists() or not any((tmp_path / "home" / "p").iterdir())


def test_device_script_runs_a_plan_and_its_export_comes_home(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text(textwrap.dedent("""
        name = "dev"
        data = "synthetic:64"
        [recipes.adapt]
        method = "fp"
        epochs = 1
        batch_size = 32
        lr = 0.05
        [[runs]]
        models = ["resnet20"]
        seeds = [0]
        recipes = ["adapt"]
        """))
    out, away = tmp_path / "out", tmp_path / "away"
    out.mkdir()
    env = {**os.environ, "OUT": str(out), "RESULTS": str(away), "PYTHON": str(Path(os.sys.executable))}
    proc = subprocess.run(["bash", str(ROOT / "scripts/device_reproduce.sh"), str(plan), "5", "1"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "resnet20-adapt-s0: done" in (out / "reproduce.log").read_text()
    assert (out / "dev.manifest.json").is_file()
    assert main(["reproduce", str(plan), "--results", str(tmp_path / "home"), "--import", str(out)]) == 0
    home = tmp_path / "home" / "dev" / "resnet20-adapt-s0"
    assert (home / "metrics.json").is_file() and not (home / "state.pt").exists()
    assert digest(home)["last.safetensors"] == digest(away / "dev" / "resnet20-adapt-s0")["last.safetensors"]
