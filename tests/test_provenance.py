"""Provenance in a real temporary git repository: a dirty tree records which changes ran."""
from __future__ import annotations

import hashlib
import shutil
import subprocess

import pytest

from ttq_lib.training import provenance as prov

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _git(repo, *args) -> bytes:
    return subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@example.org", *args], cwd=repo,
                          capture_output=True, check=True).stdout


@pytest.fixture()
def repo(tmp_path, monkeypatch):
    """A git repository with two committed files (one binary), the current directory during the test."""
    # The user's own git configuration (diff.noprefix, colours, ...) must not change what is hashed.
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", "/dev/null")
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.delenv("TTQ_GIT_COMMIT", raising=False)
    monkeypatch.delenv("TTQ_GIT_DIFF_SHA256", raising=False)
    _git(tmp_path, "init", "-q")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 't'\n")  # a source checkout, as ours is
    (tmp_path / "train.py").write_text("lr = 0.1\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    _git(tmp_path, "add", "pyproject.toml", "train.py", "blob.bin")
    _git(tmp_path, "commit", "-q", "-m", "start")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_clean_tree_records_only_the_commit(repo):
    head = _git(repo, "rev-parse", "HEAD").decode().strip()
    (repo / "untracked.txt").write_text("not part of the commit, not counted")
    p = prov.provenance(repo)
    assert p["git_commit"] == head
    assert "git_diff_sha256" not in p and "git_dirty_files" not in p


def test_dirty_tree_records_the_diff_hash_and_files(repo):
    head = _git(repo, "rev-parse", "HEAD").decode().strip()
    (repo / "train.py").write_text("lr = 0.2\n")
    p = prov.provenance(repo)
    assert p["git_commit"] == head + "+dirty"
    assert p["git_dirty_files"] == ["train.py"]
    diff = _git(repo, "diff", "HEAD", "--binary")
    assert b"-lr = 0.1\n+lr = 0.2\n" in diff
    assert p["git_diff_sha256"] == hashlib.sha256(diff).hexdigest()
    # a different edit gives a different hash; staging it changes nothing (the diff is against HEAD)
    (repo / "train.py").write_text("lr = 0.3\n")
    third = prov.provenance(repo)["git_diff_sha256"]
    assert third != p["git_diff_sha256"]
    _git(repo, "add", "train.py")
    assert prov.provenance(repo)["git_diff_sha256"] == third


def test_binary_changes_hash_by_content(repo):
    hashes = []
    for fill in (1, 2):
        (repo / "blob.bin").write_bytes(bytes([fill]) * 300)
        p = prov.provenance(repo)
        assert p["git_dirty_files"] == ["blob.bin"]
        assert p["git_diff_sha256"] == hashlib.sha256(_git(repo, "diff", "HEAD", "--binary")).hexdigest()
        hashes.append(p["git_diff_sha256"])
    # plain `git diff` prints the same "Binary files ... differ" line for both edits
    assert hashes[0] != hashes[1]


def test_deleted_and_nested_files_are_listed(repo):
    (repo / "sub").mkdir()
    (repo / "sub" / "m.py").write_text("x = 1\n")
    _git(repo, "add", "sub/m.py")
    _git(repo, "commit", "-q", "-m", "more")
    (repo / "blob.bin").unlink()
    (repo / "sub" / "m.py").write_text("x = 2\n")
    assert prov.provenance(repo)["git_dirty_files"] == ["blob.bin", "sub/m.py"]


def test_copy_without_git_takes_the_hash_from_the_environment(tmp_path, monkeypatch):
    repo = tmp_path  # no repository here
    monkeypatch.setenv("TTQ_GIT_COMMIT", "abc123+dirty")
    monkeypatch.delenv("TTQ_GIT_DIFF_SHA256", raising=False)
    p = prov.provenance(repo)
    assert p["git_commit"] == "abc123+dirty" and "git_diff_sha256" not in p
    monkeypatch.setenv("TTQ_GIT_DIFF_SHA256", "AB" * 32)
    assert prov.provenance(repo)["git_diff_sha256"] == "ab" * 32
    monkeypatch.setenv("TTQ_GIT_DIFF_SHA256", "not-a-hash")
    with pytest.raises(ValueError, match="TTQ_GIT_DIFF_SHA256='not-a-hash' is not a sha256 hex digest.*unset it"):
        prov.provenance(repo)


def test_the_commit_is_the_library_checkouts_not_the_current_directorys(repo):
    """``ttq train`` started inside another repository records the commit of the code that ran."""
    assert prov.provenance()["git_commit"] != _git(repo, "rev-parse", "HEAD").decode().strip()
    if (prov.CODE_DIR.parent / ".git").exists():  # an editable install from a checkout (CI's clone)
        head = _git(prov.CODE_DIR, "rev-parse", "HEAD").decode().strip()
        assert prov.provenance()["git_commit"].removesuffix("+dirty") == head
    assert prov.repo_root() == repo.resolve()  # while the folder a path is in still follows the path
    (repo / "results").mkdir()
    assert prov.repo_root(repo / "results" / "last.safetensors") == repo.resolve()
    assert prov.repo_root(repo.parent) is None  # outside git


def test_an_installed_copy_inside_another_repository_records_no_commit(repo):
    """A wheel installed into a virtual environment inside a project: site-packages is in that project's git
    tree, but its commit is not the library's."""
    package = repo / ".venv" / "lib" / "site-packages" / "ttq_lib"
    package.mkdir(parents=True)
    assert prov.git_commit(package) == "unknown" and prov.git_commit(repo) != "unknown"
    assert prov.provenance(package)["git_commit"] == "unknown"


def test_metrics_name_the_checkpoint_relative_to_the_repository_it_is_written_into(repo, tmp_path_factory):
    """A run folder inside a repository (a committed run) names its checkpoint from that repository's root, so
    the path means the same on every clone; outside git the path is absolute."""
    from ttq_lib.training import TrainConfig, train

    def run(out):
        cfg = TrainConfig(model="resnet20", method="ttq", epochs=1, batch_size=16, train_subset=32,
                          test_subset=12, threads=1, data="synthetic:64", out=str(out))
        return train(cfg, progress=False)["checkpoint"]

    assert run(repo / "results" / "r") == "results/r/last.safetensors"
    outside = tmp_path_factory.mktemp("no_git") / "r"
    assert run(outside) == str((outside / "last.safetensors").resolve())
