"""ttq_lib.course.workbook: the checkout, fast mode, threads, and where the data and the pretrained model are."""
from pathlib import Path

import pytest
import torch

from ttq_lib.course import workbook

ROOT = Path(__file__).resolve().parent.parent


def test_find_repo_root_from_a_subfolder_and_fallback(tmp_path, fake_repo):
    root = fake_repo
    assert workbook.find_repo_root(root / "notebooks") == root.resolve()
    assert workbook.find_repo_root(ROOT / "notebooks") == ROOT
    # outside any checkout: the checkout ttq_lib was imported from
    assert workbook.find_repo_root(tmp_path) == ROOT


@pytest.mark.parametrize("value, expected", [("1", True), ("true", True), ("", False), ("0", False), (None, False)])
def test_fast_mode(monkeypatch, value, expected):
    if value is None:
        monkeypatch.delenv("TTQ_FAST", raising=False)
    else:
        monkeypatch.setenv("TTQ_FAST", value)
    assert workbook.fast_mode() is expected


def test_set_threads(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.setenv("TTQ_THREADS", "2")
        assert workbook.set_threads() == 2 and torch.get_num_threads() == 2
        monkeypatch.delenv("TTQ_THREADS")
        assert workbook.set_threads() == 1
        with pytest.raises(ValueError):
            workbook.set_threads(0)
    finally:
        torch.set_num_threads(before)


def test_pretrained_checkpoint_prefers_the_environment(tmp_path, monkeypatch, fake_repo):
    (tmp_path / "resnet20-abc.th").write_bytes(b"")
    monkeypatch.setenv("TTQ_PRETRAINED_DIR", str(tmp_path))
    assert workbook.pretrained_checkpoint(ROOT) == tmp_path / "resnet20-abc.th"
    with pytest.raises(FileNotFoundError, match="TTQ_PRETRAINED_DIR"):
        workbook.pretrained_checkpoint(fake_repo, arch="resnet1202")


def test_pretrained_checkpoint_falls_back_to_the_committed_fp_model(monkeypatch, fake_repo):
    monkeypatch.delenv("TTQ_PRETRAINED_DIR", raising=False)
    root = fake_repo
    fp = root / workbook.FP_FALLBACK
    fp.parent.mkdir(parents=True)
    fp.write_bytes(b"")
    assert workbook.pretrained_checkpoint(root) == fp.resolve()


def test_resolve_start_checkpoint_as_written_else_by_name_in_the_pretrained_folders(tmp_path, monkeypatch,
                                                                                  fake_repo):
    root = fake_repo
    monkeypatch.setenv("TTQ_PRETRAINED_DIR", str(tmp_path / "pretrained"))
    (root / "runs").mkdir()
    (root / "runs" / "fp.safetensors").write_bytes(b"")
    assert workbook.resolve_start_checkpoint("runs/fp.safetensors", root) == root.resolve() / "runs/fp.safetensors"
    # a folder of one past run (the git-ignored gpu_carry/) is not searched for other names
    (root / "gpu_carry").mkdir()
    (root / "gpu_carry" / "resnet20-abc.th").write_bytes(b"")
    assert workbook.resolve_start_checkpoint("/elsewhere/resnet20-abc.th", root) is None
    # a run started on another machine is found by the file's name in $TTQ_PRETRAINED_DIR
    (tmp_path / "pretrained").mkdir()
    (tmp_path / "pretrained" / "resnet20-abc.th").write_bytes(b"")
    assert workbook.resolve_start_checkpoint("/elsewhere/resnet20-abc.th", root) == \
        tmp_path / "pretrained" / "resnet20-abc.th"
    assert workbook.resolve_start_checkpoint("", root) is None


def test_data_source_order(monkeypatch, fake_repo):
    monkeypatch.setenv("TTQ_DATA_TGZ", "/x.tgz")
    monkeypatch.setenv("TTQ_DATA", "synthetic:100")
    assert workbook.data_source(ROOT) == "synthetic:100"
    monkeypatch.delenv("TTQ_DATA")
    assert workbook.data_source(ROOT) == "/x.tgz"
    monkeypatch.delenv("TTQ_DATA_TGZ")
    assert workbook.data_source(fake_repo) == "synthetic"  # no ../shared beside it
