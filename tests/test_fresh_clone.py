"""The project as a user meets it: a copy of the checkout with no ../shared beside it.

With the data given by ``$TTQ_DATA`` and the pretrained models served by a real HTTP server on 127.0.0.1
(``$TTQ_PRETRAINED_URL``, as a course server would), ``ttq demo`` and notebook 01 (fast mode) run and print where
their inputs came from.  With nothing set and no network, every entry point stops with the resolver's error and
never prints an accuracy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from file_server import FileServer, closed_port_url

REPO = Path(__file__).resolve().parent.parent
R20 = "resnet20-12fca82f.th"
VARIABLES = ("TTQ_DATA", "TTQ_DATA_TGZ", "TTQ_PRETRAINED_DIR", "TTQ_PRETRAINED_URL", "TTQ_CIFAR10_URL", "TTQ_CACHE",
             "TTQ_OFFLINE_COPY", "PYTHONPATH")


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The checkout's files as git sees them (tracked and new, not ignored), results/ left out (nothing here reads
    it), in a folder whose parent has no shared/."""
    root = tmp_path_factory.mktemp("user") / "ttq-workbook"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.splitlines()
    for rel in files:
        if rel.startswith("results/") or not (REPO / rel).is_file():
            continue
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, root / rel)
    assert not (root.parent / "shared").exists()
    return root


def _env(clone: Path, cache: Path, **values) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in VARIABLES}
    # the clone's own ttq_lib, not the checkout's: its ../shared is the one that must be missing
    return {**env, "PYTHONPATH": str(clone), "TTQ_CACHE": str(cache), **values}


def _ttq(clone: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ttq_lib.cli", *args], cwd=clone, env=env, capture_output=True,
                          text=True, timeout=600)


def test_demo_from_a_clone_takes_its_inputs_from_the_environment_and_a_mirror(clone, tmp_path, cifar_tgz,
                                                                             resnet20_th):
    (tmp_path / "mirror").mkdir()
    shutil.copy(resnet20_th, tmp_path / "mirror" / R20)
    cache = tmp_path / "cache"
    with FileServer(tmp_path / "mirror") as server:
        env = _env(clone, cache, TTQ_DATA=str(cifar_tgz), TTQ_PRETRAINED_URL=server.url)
        done = _ttq(clone, env, "demo")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (f"model: {cache / 'pretrained' / R20} (downloaded from {server.url}{R20} into the user "
                        f"cache {cache})")
    assert lines[1] == f"data:  CIFAR-10 (JPEG copy), tar:{cifar_tgz} ($TTQ_DATA)"
    # README's figures (section "Batch-norm recalibration"), row by row
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("model                         no training  BN recalibrated"):]
    for row in table.split("```")[0].strip().splitlines():
        assert row.rstrip() in [line.rstrip() for line in lines], row


def test_with_nothing_set_and_no_network_every_entry_point_stops_with_the_error(clone, tmp_path):
    offline = closed_port_url()
    env = _env(clone, tmp_path / "cache", TTQ_PRETRAINED_URL=offline,
               TTQ_CIFAR10_URL=offline + "cifar-10-python.tar.gz")
    calls = {
        "demo": ["demo"],
        "train": ["train", "--start-from", "pretrained", "--epochs", "1", "--out", str(tmp_path / "run")],
        "train, data only": ["train", "--epochs", "1", "--out", str(tmp_path / "run2")],
        "reproduce": ["reproduce", "reproduce/cifar10.toml", "--results", str(tmp_path / "runs"),
                      "--only", "resnet20-adapt-s0"],
    }
    for what, args in calls.items():
        done = _ttq(clone, env, *args)
        assert done.returncode == 2, (what, done.stdout, done.stderr)
        assert "%" not in done.stdout, what  # never an accuracy
        assert offline in done.stderr, (what, done.stderr)  # the URL it could not reach
        assert ("TTQ_DATA=PATH" if what == "train, data only" else "TTQ_PRETRAINED_DIR=FOLDER") in done.stderr, what
    assert not (tmp_path / "run").exists() and not (tmp_path / "runs" / "cifar10" / "resnet20-adapt-s0").exists()


def _execute(notebook: Path, env: dict, timeout: int) -> tuple[object, str | None]:
    """Run a notebook top to bottom in a kernel with ``env``; (the executed notebook, the error or None)."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    nb = nbformat.read(notebook, as_version=4)
    for cell in nb.cells:  # the committed outputs go: what is read afterwards is this run's
        if cell.cell_type == "code":
            cell.outputs = []
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(notebook.parent)}})
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(env)  # the kernel inherits this process's environment
    try:
        client.execute()
        return nb, None
    except CellExecutionError as e:
        return nb, str(e)
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _printed(nb) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def test_notebook_01_from_a_clone(clone, tmp_path, cifar_tgz, resnet20_th):
    """Full mode with nothing reachable stops at the model, printing no accuracy; fast mode with the data in
    $TTQ_DATA and the model on a mirror runs to the end on the real data and says so."""
    notebook = clone / "notebooks" / "01_threshold_selection.ipynb"
    offline = closed_port_url()
    nb, error = _execute(notebook, _env(clone, tmp_path / "empty", TTQ_FAST="0", TTQ_PRETRAINED_URL=offline,
                                        TTQ_CIFAR10_URL=offline), timeout=120)
    assert error is not None and "InputUnavailable" in error and f"{offline}{R20}" in error
    assert "%" not in _printed(nb)

    (tmp_path / "mirror").mkdir()
    shutil.copy(resnet20_th, tmp_path / "mirror" / R20)
    cache = tmp_path / "cache"
    with FileServer(tmp_path / "mirror") as server:
        nb, error = _execute(notebook, _env(clone, cache, TTQ_FAST="1", TTQ_DATA=str(cifar_tgz),
                                            TTQ_PRETRAINED_URL=server.url), timeout=600)
    assert error is None, error
    printed = _printed(nb)
    assert f"model: resnet20, {cache / 'pretrained' / R20} (downloaded from {server.url}{R20}" in printed
    assert f"data: CIFAR-10 (JPEG copy), tar:{cifar_tgz} ($TTQ_DATA)" in printed
    assert "SYNTHETIC" not in printed
