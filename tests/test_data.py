"""Tests for ttq_lib.data (sources, cache, cifar10, batches): every source format on tiny data, the cache, augmentation and batching."""
from __future__ import annotations

import os
import pickle
import tarfile
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open

from ttq_lib import data
from ttq_lib.data import cache, sources
from ttq_lib.data import (
    CLASSES, Batches, CifarTensors, DataSourceError, augment, crop_flip, load_cifar10, normalize,
)

PER_CLASS = {"train": 2, "test": 1}


def _random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)


def _expected(images: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    """The tensors load_cifar10 should return for a tree built by _write_tree (class-major order)."""
    out = {}
    for split, arr in images.items():
        out[f"{split}_x"] = torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.arange(len(CLASSES)).repeat_interleave(PER_CLASS[split])
    return out


def _write_tree(base: Path, fmt: str = "png", seed: int = 0) -> dict[str, np.ndarray]:
    """train/<class>/NNNN.<fmt> and test/<class>/..., PER_CLASS images per class; returns the pixels."""
    images = {}
    for k, split in enumerate(("train", "test")):
        arr = _random_images(len(CLASSES) * PER_CLASS[split], seed + k)
        if fmt == "jpg":
            # Flat 8x8 blocks (JPEG's own block size) survive compression nearly unchanged.
            arr = np.repeat(np.repeat(arr[:, ::8, ::8], 8, axis=1), 8, axis=2)
        for i, img in enumerate(arr):
            cls = CLASSES[i // PER_CLASS[split]]
            d = base / split / cls
            d.mkdir(parents=True, exist_ok=True)
            opts = {"quality": 95, "subsampling": 0} if fmt == "jpg" else {}  # 4:4:4 keeps colour edges
            Image.fromarray(img).save(d / f"{i % PER_CLASS[split]:04d}.{fmt}", **opts)
        images[split] = arr
    return images


def _write_batches(d: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A cifar-10-batches-py folder in the original pickle format, 3 images per batch."""
    d.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    xs, ys = {}, {}
    for name in cache.BATCH_FILES:
        x = rng.integers(0, 256, size=(3, 3072), dtype=np.uint8)
        y = [int(v) for v in rng.integers(0, 10, size=3)]
        with open(d / name, "wb") as f:
            pickle.dump({b"batch_label": name.encode(), b"labels": y, b"data": x, b"filenames": []}, f)
        xs[name], ys[name] = x, y
    with open(d / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CLASSES], b"num_vis": 3072}, f)
    train = cache.BATCH_FILES[:5]
    return {
        "train_x": torch.from_numpy(np.concatenate([xs[n] for n in train])).view(-1, 3, 32, 32),
        "train_y": torch.tensor(sum((ys[n] for n in train), [])),
        "test_x": torch.from_numpy(xs["test_batch"]).view(-1, 3, 32, 32),
        "test_y": torch.tensor(ys["test_batch"]),
    }


def _tar(src: Path, out: Path, arcname: str) -> Path:
    with tarfile.open(out, "w:gz") as tf:
        tf.add(src, arcname=arcname)
    return out


def _assert_equal(d: CifarTensors, expected: dict[str, torch.Tensor]) -> None:
    for k, v in expected.items():
        got = getattr(d, k)
        assert got.dtype == v.dtype and got.shape == v.shape, k
        assert torch.equal(got, v), k


def _no_decoding(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("decoded although a valid cache exists")

    for name in ("_decode_one", "_read_batches_dir", "_read_tarball", "_read_image_folder"):
        monkeypatch.setattr(sources, name, fail)


@pytest.fixture(autouse=True)
def _isolated_caches(tmp_path, monkeypatch):
    # Never let a test write into the repository's data/cache or the user's ~/.cache.
    fallback = tmp_path / "fallback-cache"
    monkeypatch.setattr(cache, "default_cache_dirs", lambda: [fallback])
    monkeypatch.delenv("TTQ_DATA", raising=False)
    return fallback


# ---------------------------------------------------------------- sources


def test_batches_dir_round_trip(tmp_path):
    expected = _write_batches(tmp_path / "cifar-10-batches-py")
    for source in (tmp_path / "cifar-10-batches-py", tmp_path):  # the folder itself or its parent
        d = load_cifar10(source, progress=False)
        _assert_equal(d, expected)
    assert d.source.startswith("batches:")


def test_batches_dir_refuses_foreign_pickles(tmp_path):
    _write_batches(tmp_path / "b")
    with open(tmp_path / "b" / "test_batch", "wb") as f:
        pickle.dump({b"data": os.system, b"labels": []}, f)  # would be code execution if trusted
    with pytest.raises(DataSourceError, match="test_batch"):
        load_cifar10(tmp_path / "b", progress=False)


def test_image_folder_png_exact(tmp_path):
    images = _write_tree(tmp_path / "tree")
    d = load_cifar10(tmp_path / "tree", progress=False)
    _assert_equal(d, _expected(images))


def test_image_folder_jpeg_approximately(tmp_path):
    images = _write_tree(tmp_path / "tree", fmt="jpg")
    d = load_cifar10(str(tmp_path / "tree"), progress=False)
    exp = _expected(images)
    assert torch.equal(d.train_y, exp["train_y"]) and torch.equal(d.test_y, exp["test_y"])
    diff = (d.train_x.float() - exp["train_x"].float()).abs()
    assert diff.mean() < 2 and diff.max() < 24 and d.train_x.shape == exp["train_x"].shape


def test_image_folder_under_one_wrapping_folder(tmp_path):
    images = _write_tree(tmp_path / "outer" / "cifar10")
    _assert_equal(load_cifar10(tmp_path / "outer", progress=False), _expected(images))


def test_tarball_with_top_level_folder(tmp_path):
    images = _write_tree(tmp_path / "tree")
    (tmp_path / "tree" / "README.txt").write_text("not an image")  # ignored
    tgz = _tar(tmp_path / "tree", tmp_path / "cifar.tar.gz", arcname="cifar10-png")
    d = load_cifar10(tgz, progress=False)
    _assert_equal(d, _expected(images))
    assert d.source == f"tar:{tgz}"


def test_tarball_without_top_level_folder_and_plain_tar(tmp_path):
    images = _write_tree(tmp_path / "tree")
    out = tmp_path / "flat.tar"
    with tarfile.open(out, "w") as tf:
        for split in ("train", "test"):
            tf.add(tmp_path / "tree" / split, arcname=split)
    _assert_equal(load_cifar10(out, progress=False), _expected(images))


def test_tarball_of_batches_py(tmp_path):
    # The archive torchvision downloads (cifar-10-python.tar.gz) is read without extracting it.
    expected = _write_batches(tmp_path / "src" / "cifar-10-batches-py")
    tgz = _tar(tmp_path / "src" / "cifar-10-batches-py", tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py")
    _assert_equal(load_cifar10(tgz, progress=False), expected)


def test_synthetic_is_deterministic_and_balanced():
    a, b = load_cifar10("synthetic:100"), load_cifar10("synthetic:100")
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape == (100, 3, 32, 32) and len(a.test_y) == 20
    assert torch.bincount(a.train_y).tolist() == [10] * 10
    assert a.cache_path is None
    # Class means differ clearly: the set is learnable.
    means = torch.stack([a.train_x[a.train_y == c].float().mean(dim=(0, 2, 3)) for c in range(10)])
    assert torch.cdist(means, means).add(torch.eye(10) * 1e3).min() > 5


def test_env_var_used_when_source_is_none(tmp_path, monkeypatch):
    images = _write_tree(tmp_path / "tree")
    monkeypatch.setenv("TTQ_DATA", str(tmp_path / "tree"))
    _assert_equal(load_cifar10(progress=False), _expected(images))
    monkeypatch.setenv("TTQ_DATA", "synthetic:30")
    assert len(load_cifar10().train_y) == 30


def test_subset_is_stratified_and_deterministic():
    d = load_cifar10("synthetic:200")
    s1, s2 = d.subset(50, 10, seed=3), d.subset(50, 10, seed=3)
    assert torch.equal(s1.train_x, s2.train_x) and torch.equal(s1.test_y, s2.test_y)
    assert sorted(torch.bincount(s1.train_y, minlength=10).tolist()) == [5] * 10
    assert torch.bincount(s1.test_y, minlength=10).tolist() == [1] * 10
    assert not torch.equal(d.subset(50, 10, seed=4).train_x, s1.train_x)
    assert len(d.subset(None, 0).train_y) == 200
    with pytest.raises(ValueError, match="n_train=201"):
        d.subset(201, 1)


# ---------------------------------------------------------------- cache


def test_cache_hit_skips_decoding(tmp_path, monkeypatch):
    images = _write_tree(tmp_path / "tree")
    tgz = _tar(tmp_path / "tree", tmp_path / "c.tgz", "x")
    first = load_cifar10(tgz, progress=False)
    assert first.cache_path and Path(first.cache_path).parent == tmp_path  # beside the source
    _no_decoding(monkeypatch)
    second = load_cifar10(tgz, progress=False)
    assert second.cache_path == first.cache_path
    _assert_equal(second, _expected(images))


def test_cache_hit_for_folder_and_batches(tmp_path, monkeypatch):
    _write_tree(tmp_path / "tree")
    _write_batches(tmp_path / "cifar-10-batches-py")
    a, b = load_cifar10(tmp_path / "tree", progress=False), load_cifar10(tmp_path / "cifar-10-batches-py")
    _no_decoding(monkeypatch)
    assert torch.equal(load_cifar10(tmp_path / "tree").train_x, a.train_x)
    assert torch.equal(load_cifar10(tmp_path / "cifar-10-batches-py").test_x, b.test_x)


def test_cache_invalidated_when_source_changes(tmp_path):
    images = _write_tree(tmp_path / "tree")
    first = load_cifar10(tmp_path / "tree", progress=False)
    new = np.zeros((32, 32, 3), np.uint8) + 7
    target = tmp_path / "tree" / "train" / "airplane" / "0000.png"
    Image.fromarray(new).save(target)
    os.utime(target, ns=(1, 1))  # a different mtime even on coarse-grained file systems
    second = load_cifar10(tmp_path / "tree", progress=False)
    assert second.cache_path != first.cache_path
    assert not Path(first.cache_path).exists(), "the stale cache should be removed"
    assert (second.train_x[0] == 7).all()
    assert torch.equal(second.train_x[1:], _expected(images)["train_x"][1:])


def test_tarball_cache_keyed_by_content(tmp_path):
    _write_tree(tmp_path / "a", seed=0)
    _write_tree(tmp_path / "b", seed=5)
    tgz = _tar(tmp_path / "a", tmp_path / "d.tgz", "t")
    first = load_cifar10(tgz, progress=False)
    _tar(tmp_path / "b", tgz, "t")  # same name, new content
    second = load_cifar10(tgz, progress=False)
    assert second.cache_path != first.cache_path
    assert not torch.equal(first.train_x, second.train_x)


def test_same_file_name_in_two_folders_keeps_both_caches(tmp_path, _isolated_caches, monkeypatch):
    # /a/cifar.tar.gz and /b/cifar.tar.gz, both read-only, both cache into the one fallback folder
    # (~/.cache/ttq-workbook in real use): neither may delete the other's cache.
    _write_tree(tmp_path / "tree_a", seed=0)
    _write_tree(tmp_path / "tree_b", seed=5)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    tgz_a = _tar(tmp_path / "tree_a", a / "cifar.tar.gz", "t")
    tgz_b = _tar(tmp_path / "tree_b", b / "cifar.tar.gz", "t")
    try:
        a.chmod(0o555), b.chmod(0o555)
        first_a = load_cifar10(tgz_a, progress=False)
        first_b = load_cifar10(tgz_b, progress=False)
        assert Path(first_a.cache_path).parent == Path(first_b.cache_path).parent == _isolated_caches
        assert first_a.cache_path != first_b.cache_path
        assert Path(first_a.cache_path).exists() and Path(first_b.cache_path).exists()
        assert not torch.equal(first_a.train_x, first_b.train_x)
        with monkeypatch.context() as m:  # a relative path to the same tarball is the same source
            m.chdir(tmp_path)
            _no_decoding(m)
            assert load_cifar10("a/cifar.tar.gz", progress=False).cache_path == first_a.cache_path
        # a changed tarball at /a's path replaces /a's old cache and leaves /b's alone
        a.chmod(0o755)
        images_c = _write_tree(tmp_path / "tree_c", seed=9)
        _tar(tmp_path / "tree_c", tgz_a, "t")
        a.chmod(0o555)
        second_a = load_cifar10(tgz_a, progress=False)
    finally:
        a.chmod(0o755), b.chmod(0o755)
    assert Path(second_a.cache_path).parent == _isolated_caches
    assert sorted(p.name for p in _isolated_caches.iterdir()) == sorted(
        [Path(second_a.cache_path).name, Path(first_b.cache_path).name])
    _assert_equal(second_a, _expected(images_c))
    with safe_open(first_b.cache_path, framework="pt") as f:
        assert f.metadata()["source_id"] == f"tar:{tgz_b}"


def test_cache_files_are_0644_whatever_the_umask(tmp_path):
    _write_tree(tmp_path / "tree")
    old = os.umask(0o077)
    try:
        d = load_cifar10(tmp_path / "tree", progress=False)
    finally:
        os.umask(old)
    assert Path(d.cache_path).stat().st_mode & 0o777 == 0o644


def test_corrupt_cache_is_rebuilt(tmp_path):
    images = _write_tree(tmp_path / "tree")
    first = load_cifar10(tmp_path / "tree", progress=False)
    Path(first.cache_path).write_bytes(b"\x00garbage" * 10)
    with pytest.warns(UserWarning, match="unusable CIFAR-10 cache"):
        second = load_cifar10(tmp_path / "tree", progress=False)
    _assert_equal(second, _expected(images))
    assert cache.read_cache(Path(second.cache_path), cache.cache_key("folder", tmp_path / "tree")) is not None


def test_read_only_source_folder_falls_back(tmp_path, _isolated_caches):
    ro = tmp_path / "ro"
    ro.mkdir()
    _write_tree(tmp_path / "tree")
    tgz = _tar(tmp_path / "tree", ro / "c.tar.gz", "t")
    other = _tar(tmp_path / "tree", ro / "c2.tar.gz", "t")
    ro.chmod(0o555)  # no write bits: treated as read-only even when the tests run as root
    try:
        d = load_cifar10(tgz, progress=False)
        assert Path(d.cache_path).parent == _isolated_caches
        assert not list(ro.glob("*.ttq-cache-*"))
        # An explicit cache_dir comes first (a cache already elsewhere would still be found and used).
        explicit = load_cifar10(other, cache_dir=tmp_path / "mine", progress=False)
        assert Path(explicit.cache_path).parent == tmp_path / "mine"
    finally:
        ro.chmod(0o755)


# ---------------------------------------------------------------- errors


def test_missing_path(tmp_path):
    missing = tmp_path / "nope.tar.gz"
    with pytest.raises(FileNotFoundError, match="nope.tar.gz") as e:
        load_cifar10(missing)
    assert "cifar-10-batches-py" in str(e.value)


def test_directory_without_layout(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "cat.png").write_bytes(b"x")
    with pytest.raises(DataSourceError, match="none of the expected layouts"):
        load_cifar10(tmp_path / "photos")


def test_tree_with_missing_class_and_split(tmp_path):
    _write_tree(tmp_path / "tree")
    for p in (tmp_path / "tree" / "train" / "frog").iterdir():
        p.unlink()
    with pytest.raises(DataSourceError, match="lacks classes frog"):
        load_cifar10(tmp_path / "tree", progress=False)
    _write_tree(tmp_path / "tree2")
    for p in (tmp_path / "tree2" / "test").rglob("*.png"):
        p.unlink()
    with pytest.raises(DataSourceError, match="split 'test' is missing"):
        load_cifar10(tmp_path / "tree2", progress=False)


def test_unknown_class_folder(tmp_path):
    _write_tree(tmp_path / "tree")
    (tmp_path / "tree" / "train" / "plane").mkdir()
    Image.new("RGB", (32, 32)).save(tmp_path / "tree" / "train" / "plane" / "0.png")
    with pytest.raises(DataSourceError, match="unknown class folder 'plane'"):
        load_cifar10(tmp_path / "tree", progress=False)


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_corrupt_tarball(tmp_path, damage):
    _write_tree(tmp_path / "tree")
    tgz = _tar(tmp_path / "tree", tmp_path / "c.tar.gz", "t")
    raw = tgz.read_bytes()
    tgz.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else os.urandom(len(raw)))
    with pytest.raises(DataSourceError, match="c.tar.gz.*(truncated or corrupt)"):
        load_cifar10(tgz, progress=False)


def test_undecodable_image_is_named(tmp_path):
    _write_tree(tmp_path / "tree")
    (tmp_path / "tree" / "test" / "ship" / "0000.png").write_bytes(b"\x89PNG but not really")
    with pytest.raises(DataSourceError, match="test/ship/0000.png"):
        load_cifar10(tmp_path / "tree", progress=False)


def test_wrong_image_size(tmp_path):
    _write_tree(tmp_path / "tree")
    Image.new("RGB", (64, 64)).save(tmp_path / "tree" / "train" / "dog" / "0001.png")
    with pytest.raises(DataSourceError, match="64x64"):
        load_cifar10(tmp_path / "tree", progress=False)


def test_not_a_tarball_file(tmp_path):
    (tmp_path / "x.zip").write_bytes(b"PK")
    with pytest.raises(DataSourceError, match="not a tarball"):
        load_cifar10(tmp_path / "x.zip")


@pytest.mark.parametrize("exc", [urllib.error.URLError("[Errno -3] Temporary failure in name resolution"),
                                 OSError("Network is unreachable")])
def test_offline_download_explains_what_to_do(tmp_path, monkeypatch, exc):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise exc

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataSourceError) as e:
        load_cifar10("download", root=tmp_path / "data")
    msg = str(e.value)
    for needed in ("no internet", "--data PATH", "TTQ_DATA", "cifar-10-batches-py", ".tar.gz"):
        assert needed in msg


def test_download_false_without_data(tmp_path):
    with pytest.raises(DataSourceError, match="download=False"):
        load_cifar10("download", root=tmp_path, download=False)


def test_download_uses_existing_folder_in_root(tmp_path, monkeypatch):
    import torchvision.datasets

    expected = _write_batches(tmp_path / "cifar-10-batches-py")
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda *a, **k: pytest.fail("should not download"))
    d = load_cifar10("download", root=tmp_path)
    _assert_equal(d, expected)
    assert Path(d.cache_path).parent == tmp_path


def test_bad_synthetic_spec():
    with pytest.raises(ValueError, match="synthetic:N"):
        load_cifar10("synthetic:lots")


# ---------------------------------------------------------------- augmentation


def _windows(img: torch.Tensor, pad: int) -> list[torch.Tensor]:
    """Every crop of the padded image and its mirror image."""
    padded = torch.nn.functional.pad(img, (pad,) * 4)
    h, w = img.shape[1:]
    out = []
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            win = padded[:, dy:dy + h, dx:dx + w]
            out += [win, win.flip(-1)]
    return out


def test_augment_outputs_are_padded_windows():
    x = torch.randint(1, 256, (24, 3, 32, 32), dtype=torch.uint8)  # no zeros: padding is recognisable
    y = augment(x, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and y.dtype == torch.uint8
    for i in range(len(x)):
        assert any(torch.equal(y[i], w) for w in _windows(x[i], 4)), i


def test_crop_flip_exact_offsets():
    x = torch.arange(2 * 3 * 4 * 5, dtype=torch.uint8).view(2, 3, 4, 5)
    out = crop_flip(x, torch.tensor([0, 2]), torch.tensor([1, 2]), torch.tensor([False, True]), pad=1)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    assert torch.equal(out[0], padded[0, :, 0:4, 1:6])
    assert torch.equal(out[1], padded[1, :, 2:6, 2:7].flip(-1))


def test_augment_is_seeded_and_varied():
    x = torch.randint(1, 256, (64, 3, 32, 32), dtype=torch.uint8)
    a = augment(x, torch.Generator().manual_seed(1))
    assert torch.equal(a, augment(x, torch.Generator().manual_seed(1)))
    assert not torch.equal(a, augment(x, torch.Generator().manual_seed(2)))
    assert not torch.equal(a, x)
    # pad=0 leaves only the flip: each image is itself or its mirror, both occur.
    f = augment(x, torch.Generator().manual_seed(3), pad=0)
    same = [torch.equal(f[i], x[i]) for i in range(64)]
    mirrored = [torch.equal(f[i], x[i].flip(-1)) for i in range(64)]
    assert all(s or m for s, m in zip(same, mirrored)) and 10 < sum(same) < 54


def test_augment_offsets_cover_the_range():
    g = torch.Generator().manual_seed(0)
    x = torch.zeros(2000, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 0, 0] = 255  # a marker pixel: where it lands gives the offset and flip
    y = augment(x, g)
    hits = (y[:, 0] == 255).nonzero()
    assert len(hits) < 2000  # some crops cut the marker off
    assert set(hits[:, 1].tolist()) == set(range(5)) and set(hits[:, 2].tolist()) == set(range(5)) | set(range(27, 32))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_cuda_matches_cpu():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    cpu = augment(x, torch.Generator().manual_seed(5))
    gpu = augment(x.cuda(), torch.Generator().manual_seed(5))
    assert gpu.is_cuda and torch.equal(gpu.cpu(), cpu)
    dev_gen = augment(x.cuda(), torch.Generator(device="cuda").manual_seed(5))
    assert dev_gen.is_cuda and dev_gen.shape == x.shape
    b = Batches(x, torch.zeros(32, dtype=torch.int64), batch_size=8, augment=True, device="cuda")
    c = Batches(x, torch.zeros(32, dtype=torch.int64), batch_size=8, augment=True, device="cpu")
    for (xg, _), (xc, _) in zip(b, c):
        assert torch.allclose(xg.cpu(), xc, atol=1e-6)


def test_normalize():
    x = torch.tensor([0, 255], dtype=torch.uint8).view(1, 1, 1, 2).expand(1, 3, 1, 2).contiguous()
    out = normalize(x, (0.5, 0.5, 0.5), (0.5, 0.25, 1.0))
    assert out.dtype == torch.float32
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([-1.0, -2.0, -0.5]))
    assert torch.allclose(out[0, :, 0, 1], torch.tensor([1.0, 2.0, 0.5]))
    with pytest.raises(ValueError, match="uint8"):
        normalize(x.float(), (0, 0, 0), (1, 1, 1))


# ---------------------------------------------------------------- batching


def _indexed(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images whose pixels all equal their index (mod 256) and labels equal to the index: checks pairing."""
    x = (torch.arange(n) % 256).to(torch.uint8).view(n, 1, 1, 1).expand(n, 3, 32, 32).contiguous()
    return x, torch.arange(n)


def test_batches_cover_the_epoch_once_and_keep_pairs():
    x, y = _indexed(50)
    b = Batches(x, y, batch_size=16, mean=(0, 0, 0), std=(1, 1, 1))
    assert len(b) == 4
    seen = []
    for xb, yb in b:
        assert xb.dtype == torch.float32 and yb.dtype == torch.int64
        assert torch.allclose(xb[:, 0, 5, 5] * 255, yb.float())
        seen += yb.tolist()
    assert sorted(seen) == list(range(50)) and seen != list(range(50))
    assert len(Batches(x, y, batch_size=16, drop_last=True)) == 3
    in_order = [yb.tolist() for _, yb in Batches(x, y, batch_size=25, shuffle=False)]
    assert in_order == [list(range(25)), list(range(25, 50))]


def _run(b: Batches) -> list[torch.Tensor]:
    return [torch.cat([xb.flatten(), yb.float()]) for xb, yb in b]


def test_batches_are_a_function_of_seed_and_epoch():
    x, y = _indexed(40)
    x = x + torch.randint(0, 50, x.shape, dtype=torch.uint8)  # texture, so crops and flips show
    make = lambda seed: Batches(x, y, batch_size=16, augment=True, seed=seed)  # noqa: E731
    a, b = make(0), make(0)
    a.set_epoch(3)
    b.set_epoch(1)
    list(b)  # history must not matter
    b.set_epoch(3)
    ra, rb = _run(a), _run(b)
    assert all(torch.equal(p, q) for p, q in zip(ra, rb)) and len(ra) == 3
    assert all(torch.equal(p, q) for p, q in zip(ra, _run(a)))  # iterating again repeats the epoch
    a.set_epoch(4)
    assert not torch.equal(ra[0], _run(a)[0])
    c = make(1)
    c.set_epoch(3)
    assert not torch.equal(ra[0], _run(c)[0])
    # Resuming mid-epoch gives the same remaining batches.
    b.set_epoch(3, start_batch=1)
    assert all(torch.equal(p, q) for p, q in zip(ra[1:], _run(b), strict=True))


def test_batches_validate_arguments():
    x, y = _indexed(4)
    with pytest.raises(ValueError, match="uint8"):
        Batches(x.float(), y)
    with pytest.raises(ValueError, match="one label per image"):
        Batches(x, y[:3])
    with pytest.raises(ValueError, match="start_batch"):
        Batches(x, y, batch_size=2).set_epoch(0, start_batch=3)


# ---------------------------------------------------------------- the real data


@pytest.mark.skipif(not os.environ.get("TTQ_DATA_TGZ"),
                    reason="set TTQ_DATA_TGZ to the shared cifar10-jpeg.tar.gz to test on the full data set")
def test_real_shared_tarball(monkeypatch):
    # Use the real cache locations here, so that this (slow, once) decode is reused later.
    monkeypatch.undo()
    d = load_cifar10(os.environ["TTQ_DATA_TGZ"])
    assert d.train_x.shape == (50000, 3, 32, 32) and d.test_x.shape == (10000, 3, 32, 32)
    assert torch.bincount(d.train_y).tolist() == [5000] * 10
    assert torch.bincount(d.test_y).tolist() == [1000] * 10
    mean, std = data.channel_mean_std(d.train_x)
    # README (Data): 0.4913 0.4821 0.4465 / 0.2452 0.2428 0.2606 for this JPEG copy.
    assert np.allclose(mean, (0.4913, 0.4821, 0.4465), atol=2e-3)
    assert np.allclose(std, (0.2452, 0.2428, 0.2606), atol=2e-3)
