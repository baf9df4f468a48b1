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


def test_pretrained_checkpoint_comes_from_the_resolver_and_says_so(tmp_path, monkeypatch, capsys, resnet20_th):
    monkeypatch.setenv("TTQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TTQ_PRETRAINED_DIR", str(resnet20_th.parent))
    assert workbook.pretrained_checkpoint(ROOT) == resnet20_th
    assert capsys.readouterr().out == f"model: resnet20, {resnet20_th} ($TTQ_PRETRAINED_DIR)\n"


def test_resolve_start_checkpoint_as_written_else_a_published_file_by_its_name(tmp_path, monkeypatch, fake_repo,
                                                                             resnet20_th):
    root = fake_repo
    monkeypatch.setenv("TTQ_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("TTQ_OFFLINE_COPY", "")
    monkeypatch.setenv("TTQ_PRETRAINED_DIR", str(resnet20_th.parent))
    (root / "runs").mkdir()
    (root / "runs" / "fp.safetensors").write_bytes(b"")
    assert workbook.resolve_start_checkpoint("runs/fp.safetensors", root) == root.resolve() / "runs/fp.safetensors"
    # a file that is no published model is not looked for elsewhere
    assert workbook.resolve_start_checkpoint("/elsewhere/resnet20-abc.th", root) is None
    # a run started on another machine finds its published starting model wherever the resolver does
    assert workbook.resolve_start_checkpoint("/elsewhere/resnet20-12fca82f.th", root) == resnet20_th
    assert workbook.resolve_start_checkpoint("", root) is None
