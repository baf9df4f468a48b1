"""The input resolver (ttq_lib.data.inputs): its order, checked downloads from a real HTTP server on 127.0.0.1,
and the errors when nothing can be found; the data set's name recorded with every result."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from file_server import FileServer, closed_port_url
from ttq_lib.data import inputs, load_cifar10
from ttq_lib.data.fetch import sha256_of
from ttq_lib.data.sources import DataSourceError

ENVS = ("TTQ_DATA", "TTQ_PRETRAINED_DIR", "TTQ_PRETRAINED_URL", "TTQ_CIFAR10_URL")
R20 = "resnet20-12fca82f.th"


@pytest.fixture()
def nothing_here(tmp_path, monkeypatch) -> Path:
    """A machine with no input anywhere: empty cache, no offline copy, no variables; the cache folder."""
    for var in ENVS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TTQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TTQ_OFFLINE_COPY", "")
    return tmp_path / "cache"


@pytest.fixture()
def mirror(tmp_path, resnet20_th):
    """A course server holding the published resnet20 file."""
    folder = tmp_path / "mirror"
    folder.mkdir()
    shutil.copy(resnet20_th, folder / R20)
    with FileServer(folder) as server:
        yield server


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.rglob("*") if p.is_file()) if cache.exists() else []


def test_a_download_lands_in_the_cache_loads_and_is_found_there_next_time(nothing_here, mirror, monkeypatch,
                                                                          resnet20_th):
    from ttq_lib.formats import load_model

    monkeypatch.setenv("TTQ_PRETRAINED_URL", mirror.url)
    found = inputs.resolve_pretrained("resnet20", progress=False)
    assert Path(found.value) == nothing_here / "pretrained" / R20
    assert found.origin == f"downloaded from {mirror.url}{R20} into the user cache {nothing_here}"
    assert mirror.requests == [f"/{R20}"]  # $TTQ_PRETRAINED_URL honoured: the file came from this server
    assert sha256_of(found.value) == sha256_of(resnet20_th)
    model, meta = load_model(found.value)
    assert meta["arch"] == "resnet20" and sum(p.numel() for p in model.parameters()) == 269_722
    again = inputs.resolve_pretrained("resnet20")
    assert again.value == found.value and again.origin == f"user cache {nothing_here}"
    assert mirror.requests == [f"/{R20}"]  # nothing fetched twice
    assert inputs.input_origin(found.value) == f"user cache {nothing_here}"


@pytest.mark.parametrize("damage, says", [("corrupt", "expected one starting with 12fca82f"),
                                          ("cut", "ended after")])
def test_a_bad_download_is_refused_and_leaves_nothing(nothing_here, mirror, monkeypatch, damage, says):
    monkeypatch.setenv("TTQ_PRETRAINED_URL", mirror.url)
    mirror.damage[R20] = damage
    with pytest.raises(inputs.InputUnavailable, match=says) as err:
        inputs.resolve_pretrained("resnet20", progress=False)
    assert f"{mirror.url}{R20}" in str(err.value)
    assert _leftovers(nothing_here) == []  # no file under the final name, no temporary part
    mirror.damage.clear()  # the server mended: the next call fetches it whole
    assert Path(inputs.resolve_pretrained("resnet20", progress=False).value).is_file()


def test_offline_the_error_names_the_url_the_file_and_the_variables(nothing_here, monkeypatch):
    url = closed_port_url()
    monkeypatch.setenv("TTQ_PRETRAINED_URL", url)
    with pytest.raises(inputs.InputUnavailable) as err:
        inputs.resolve_pretrained("resnet56", progress=False)
    text = str(err.value)
    for part in (f"{url}resnet56-4bfd9763.th", "could not download", "TTQ_PRETRAINED_DIR=FOLDER",
                 "TTQ_PRETRAINED_URL=BASE_URL", str(nothing_here / "pretrained")):
        assert part in text
    assert _leftovers(nothing_here) == []
    with pytest.raises(inputs.InputUnavailable, match="no resnet20-12fca82f.th found"):
        inputs.resolve_pretrained("resnet20", download=False)
    with pytest.raises(ValueError, match="resnet20, resnet32, resnet44, resnet56"):
        inputs.resolve_pretrained("resnet110")


def test_the_order_argument_environment_offline_copy_cache(nothing_here, tmp_path, monkeypatch, resnet20_th):
    monkeypatch.setenv("TTQ_PRETRAINED_URL", closed_port_url())  # a download would fail: nothing may need one
    places = {}
    for name in ("env", "copy/pretrained", "cache/pretrained"):
        (tmp_path / name).mkdir(parents=True)
        shutil.copy(resnet20_th, tmp_path / name / R20)
        places[name] = tmp_path / name / R20
    monkeypatch.setenv("TTQ_PRETRAINED_DIR", str(tmp_path / "env"))
    monkeypatch.setenv("TTQ_OFFLINE_COPY", str(tmp_path / "copy"))
    given = inputs.resolve_pretrained("resnet20", arg=str(resnet20_th))
    assert given.value == str(resnet20_th)
    assert inputs.resolve_pretrained("resnet20") == inputs.Input(str(places["env"]), "$TTQ_PRETRAINED_DIR")
    monkeypatch.delenv("TTQ_PRETRAINED_DIR")
    assert inputs.resolve_pretrained("resnet20") == inputs.Input(str(places["copy/pretrained"]),
                                                                 f"offline copy {tmp_path / 'copy'}")
    monkeypatch.setenv("TTQ_OFFLINE_COPY", "")
    assert inputs.resolve_pretrained("resnet20").value == str(places["cache/pretrained"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        inputs.resolve_pretrained("resnet20", arg=str(tmp_path / "nowhere.th"))


def test_a_damaged_local_file_is_named_and_kept_a_damaged_cache_file_is_fetched_again(nothing_here, tmp_path,
                                                                                      mirror, monkeypatch):
    monkeypatch.setenv("TTQ_PRETRAINED_URL", mirror.url)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / R20).write_bytes(b"not a model")
    monkeypatch.setenv("TTQ_PRETRAINED_DIR", str(tmp_path / "mine"))
    with pytest.raises(inputs.InputUnavailable, match=f"{tmp_path / 'mine' / R20} \\(\\$TTQ_PRETRAINED_DIR\\)"):
        inputs.resolve_pretrained("resnet20")
    assert (tmp_path / "mine" / R20).read_bytes() == b"not a model"  # the user's file is never deleted
    monkeypatch.delenv("TTQ_PRETRAINED_DIR")
    (nothing_here / "pretrained").mkdir(parents=True)
    (nothing_here / "pretrained" / R20).write_bytes(b"half a download from an old version")
    found = inputs.resolve_pretrained("resnet20", progress=False)
    assert found.origin.startswith("downloaded from") and sha256_of(found.value).startswith("12fca82f")


def test_data_order_and_no_silent_synthetic(nothing_here, tmp_path, monkeypatch, capsys):
    from ttq_lib.course import workbook

    assert inputs.resolve_data(None) == inputs.Input("download", f"download of the original CIFAR-10 into "
                                                                 f"{nothing_here}")
    with pytest.raises(inputs.InputUnavailable, match="TTQ_DATA=PATH"):
        inputs.resolve_data(None, download=False)
    batches = nothing_here / "cifar-10-batches-py"
    batches.mkdir(parents=True)
    (batches / "data_batch_1").write_bytes(b"")
    assert inputs.resolve_data(None) == inputs.Input(str(batches), f"user cache {nothing_here}")
    (tmp_path / "copy/data").mkdir(parents=True)
    (tmp_path / "copy/data/cifar10-jpeg.tar.gz").write_bytes(b"")
    monkeypatch.setenv("TTQ_OFFLINE_COPY", str(tmp_path / "copy"))
    assert inputs.resolve_data(None).origin == f"offline copy {tmp_path / 'copy'}"
    monkeypatch.setenv("TTQ_DATA", "synthetic:100")
    assert inputs.resolve_data(None) == inputs.Input("synthetic:100", "$TTQ_DATA")
    assert inputs.resolve_data("/some/where").value == "/some/where"  # an argument wins over everything
    # notebooks: synthetic only in fast mode and only with nothing local, said out loud; full mode downloads
    monkeypatch.delenv("TTQ_DATA")
    monkeypatch.setenv("TTQ_OFFLINE_COPY", "")
    shutil.rmtree(batches)
    monkeypatch.setenv("TTQ_FAST", "1")
    assert workbook.data_source() == "synthetic"
    assert "SYNTHETIC images" in capsys.readouterr().out
    monkeypatch.setenv("TTQ_FAST", "0")
    assert workbook.data_source() == "download"


def test_offline_load_cifar10_stops_with_the_url_and_the_fix(nothing_here, monkeypatch):
    url = closed_port_url() + "cifar-10-python.tar.gz"
    monkeypatch.setenv("TTQ_CIFAR10_URL", url)
    with pytest.raises(DataSourceError) as err:
        load_cifar10(None, progress=False)
    for part in (url, "Could not download CIFAR-10", "TTQ_DATA=PATH", str(nothing_here)):
        assert part in str(err.value)
    assert not (nothing_here / "cifar-10-batches-py").exists()


def test_loaded_data_says_what_it_is_and_where_it_came_from(nothing_here, monkeypatch, tmp_path):
    from ttq_lib.data.cifar10 import test_split_sha256

    monkeypatch.setenv("TTQ_DATA", "synthetic:50")
    data = load_cifar10(None)
    assert (data.name, data.origin) == ("synthetic", "$TTQ_DATA")
    assert data.test_sha256 == test_split_sha256(data.test_x, data.test_y)
    sub = data.subset(20, 10)
    assert (sub.name, sub.origin, sub.test_sha256) == (data.name, data.origin, data.test_sha256)
    # the pickled batches (the original's published form) are CIFAR-10; another image folder is named by its hash
    import pickle

    import numpy as np
    batches = tmp_path / "cifar-10-batches-py"
    batches.mkdir()
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                              "test_batch"]):
        rng = np.random.default_rng(i)
        (batches / name).write_bytes(pickle.dumps({b"data": rng.integers(0, 256, (20, 3072), dtype=np.uint8),
                                                   b"labels": [j % 10 for j in range(20)]}))
    original = load_cifar10(str(batches), progress=False)
    assert original.name == "CIFAR-10" and original.origin == "given path"


def test_the_jpeg_copy_is_recognised(cifar):
    assert cifar.name == "CIFAR-10 (JPEG copy)"


def _run(folder: Path, data: str | None, acc: float, **extra) -> None:
    folder.mkdir(parents=True)
    metrics = {"model": "resnet20", "method": "ttq", "seed": int(folder.name[-1]), "test_accuracy": acc,
               "data": data, **extra}
    (folder / "metrics.json").write_text(json.dumps(metrics))


def test_the_table_names_the_data_and_refuses_to_mix_data_sets(tmp_path):
    from ttq_lib.reproduction.report import data_note
    from ttq_lib.reproduction.table import render_table

    jpeg, original = tmp_path / "jpeg", tmp_path / "original"
    _run(jpeg / "resnet20-ttq-s0", "tar:../shared/data/cifar10-jpeg.tar.gz", 87.0)  # written before data_name
    _run(jpeg / "resnet20-ttq-s1", "tar:/x.tgz", 87.5, data_name="CIFAR-10 (JPEG copy)")
    _run(original / "resnet20-ttq-s0", "download:/c/cifar-10-batches-py", 91.0)
    assert "our runs on CIFAR-10 (JPEG copy)" in render_table(jpeg)
    assert "our runs on CIFAR-10." in render_table(original)
    assert data_note(jpeg, original).startswith("Your runs used CIFAR-10 (JPEG copy), the committed runs CIFAR-10:")
    assert data_note(jpeg, jpeg).startswith("Both tables are of runs on CIFAR-10 (JPEG copy)")
    _run(jpeg / "resnet20-ttq-s2", "download:/c/cifar-10-batches-py", 91.0)
    with pytest.raises(ValueError, match=r"mixes runs on different data \(CIFAR-10: resnet20-ttq-s2; "
                                         r"CIFAR-10 \(JPEG copy\): resnet20-ttq-s0, resnet20-ttq-s1\)"):
        render_table(jpeg)


def test_ttq_inputs_shows_each_source_and_download_fills_the_cache(nothing_here, tmp_path, monkeypatch, capsys,
                                                                   pretrained_dir):
    from ttq_lib.cli import main

    (tmp_path / "mirror").mkdir()
    for name in inputs.PRETRAINED_FILES.values():
        shutil.copy(pretrained_dir / name, tmp_path / "mirror" / name)
    monkeypatch.setenv("TTQ_DATA", "synthetic:100")
    with FileServer(tmp_path / "mirror") as server:
        monkeypatch.setenv("TTQ_PRETRAINED_URL", server.url)
        assert main(["inputs"]) == 0
        out = capsys.readouterr().out
        assert "data: synthetic:100 ($TTQ_DATA)" in out
        assert "resnet56: not here (no resnet56-4bfd9763.th found); `ttq inputs --download` fetches it" in out
        assert server.requests == []  # without --download nothing is fetched
        assert main(["inputs", "--download"]) == 0
        assert sorted(server.requests) == sorted(f"/{n}" for n in inputs.PRETRAINED_FILES.values())
    assert _leftovers(nothing_here) == sorted(inputs.PRETRAINED_FILES.values())
    assert main(["inputs"]) == 0
    assert f"resnet44: {nothing_here / 'pretrained' / 'resnet44-014dd654.th'} (user cache" in capsys.readouterr().out
