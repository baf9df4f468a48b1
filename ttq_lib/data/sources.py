"""Where CIFAR-10 comes from: a download, the pickled batches, an image-folder tree or its tarball.

Sources understood by :func:`load_cifar10` (see its docstring for the details):

* ``None``: the resolver's answer (:mod:`ttq_lib.data.inputs`: ``$TTQ_DATA``, the offline copy, the user
  cache, else a download);
* ``"download"``: torchvision's download of the original set into ``root`` (default: the user cache);
* a ``cifar-10-batches-py`` directory (the pickled batches), or a directory that contains one;
* an image-folder tree ``train/<class>/*.png|jpg`` + ``test/<class>/...``, optionally under one
  top-level folder;
* a ``.tar.gz`` / ``.tgz`` / ``.tar`` of such a tree (or of ``cifar-10-batches-py``), read member by
  member straight from the archive, without extracting it;
* ``"synthetic"`` / ``"synthetic:N"``: a small, deterministic, learnable stand-in for tests.

Decoding 60,000 JPEGs takes seconds, not minutes, but it is still done once: the tensors are cached
as one safetensors file (:mod:`ttq_lib.data.cache`).  Training then never touches Pillow
(:mod:`ttq_lib.data.batches`).
"""
from __future__ import annotations

import io
import logging
import os
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np
import torch

from .cache import BATCH_FILES, cache_dirs, cache_key, read_cache, write_cache
from .cifar10 import CLASSES, SPLITS, CifarTensors, identify, synthetic_cifar10
from .inputs import BATCHES_DIR, Input, cifar10_url, data_missing_message, input_origin, resolve_data
from .inputs import cache_dir as user_cache_dir

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
TAR_SUFFIXES = (".tar.gz", ".tgz", ".tar", ".tar.bz2", ".tar.xz")
_CLASS_INDEX = {name: i for i, name in enumerate(CLASSES)}

ACCEPTED_FORMS = (
    "a cifar-10-batches-py directory (or a directory containing one); "
    "an image-folder tree train/<class>/*.png|jpg and test/<class>/... (CIFAR-10 class names); "
    "a .tar.gz, .tgz or .tar of such a tree; 'synthetic' or 'synthetic:N'; "
    "or 'download' for torchvision's download"
)


class DataSourceError(RuntimeError):
    """The data source exists but cannot be used: no download, a wrong layout or corrupt files."""


def load_cifar10(
    source: str | os.PathLike | None = None,
    root: str | os.PathLike | None = None,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
    progress: bool = True,
) -> CifarTensors:
    """Load CIFAR-10 into uint8 tensors, decoding at most once per source thanks to a disk cache.

    ``source``:

    * ``None``: what :func:`ttq_lib.data.inputs.resolve_data` finds (``$TTQ_DATA``, the offline copy, the
      user cache, else ``"download"``).
    * ``"download"``: use ``root/cifar-10-batches-py`` if it is there (``root``: the user cache), else
      download the original set with torchvision into ``root`` (only if ``download``).  Failing that (no
      internet), :class:`DataSourceError` names the URL and how to point at a local copy.
    * a path: a ``cifar-10-batches-py`` directory or a directory containing one; an image-folder tree
      ``train/<class>/*`` + ``test/<class>/*`` (PNG or JPEG, 32x32, CIFAR-10 class names, possibly
      under one top-level folder); or a ``.tar.gz`` / ``.tgz`` / ``.tar`` of either, read in place.
    * ``"synthetic"`` or ``"synthetic:N"``: N (default 2000) generated training images and max(10, N // 5)
      test images; deterministic and never cached.

    Cache: one ``<source name>.ttq-cache-<key>.safetensors`` file.  The key is a hash of the file
    contents for a tarball (so a copy of the same tarball shares the cache) and of each file's
    path, size and modification time for a directory.  It is looked for and written in, in order:
    ``cache_dir`` if given; beside the source (for a download: in ``root``); ``data/cache`` in
    the repository this package lives in; the user cache (``$TTQ_CACHE`` or ``~/.cache/ttq-workbook``).  A folder without write
    permission bits counts as read-only even for root (the shared data folder is meant to stay
    untouched).  The file is written atomically; a corrupt or mismatching one is ignored and
    rebuilt, and stale caches of the same source in that folder are removed.

    Raises FileNotFoundError for a path that does not exist, DataSourceError for one that cannot be
    read as CIFAR-10, ValueError for a malformed source string.
    """
    found = resolve_data(source, download=download) if source is None or isinstance(source, str) else None
    data = _load(found.value if found else source, root, cache_dir, download, progress)
    data.origin = found.origin if found else input_origin(source)
    return data


def fetch_cifar10(source: str | None = None) -> Input:
    """The resolver's answer for ``source``, made local: when it is a download, CIFAR-10 is downloaded (and
    decoded into the cache) now, and the copy in the user cache is returned.  For callers that start several
    trainings from one answer (the plan runner) or fill the cache ahead (``ttq inputs --download``)."""
    found = resolve_data(source)
    if found.value != "download":
        return found
    load_cifar10("download")
    return resolve_data(None, download=False)


def _load(source, root, cache_dir, download: bool, progress: bool) -> CifarTensors:
    if isinstance(source, str):
        text = source.strip()
        if text == "download":
            root = Path(root) if root is not None else user_cache_dir()
            return identify(_load_download(root, cache_dir, download, progress))
        if text == "synthetic" or text.startswith("synthetic:"):
            return synthetic_cifar10(_parse_synthetic(text))
        source = text
    path = Path(source).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"CIFAR-10 source {str(path)!r} does not exist. Accepted: {ACCEPTED_FORMS}."
        )
    return identify(_load_path(path, cache_dir, progress))


def _parse_synthetic(text: str) -> int:
    if text == "synthetic":
        return 2000
    arg = text.split(":", 1)[1]
    if not arg.isdigit() or int(arg) < 10:
        raise ValueError(f"bad source {text!r}: write 'synthetic' or 'synthetic:N' with an integer N >= 10")
    return int(arg)


def _load_download(root: Path, cache_dir, download: bool, progress: bool) -> CifarTensors:
    batches = root / BATCHES_DIR
    if not (batches / BATCH_FILES[0]).exists():
        if not download:
            raise DataSourceError(data_missing_message(f"CIFAR-10 is not in {str(root)!r} and download=False"))
        _torchvision_download(root)
    return _load_path(batches, cache_dir, progress, label=f"download:{batches}")


def _torchvision_download(root: Path) -> None:
    import torchvision.datasets

    dataset = torchvision.datasets.CIFAR10
    if isinstance(dataset, type) and cifar10_url() != dataset.url:  # a mirror: the same archive, still MD5-checked
        dataset = type("MirroredCIFAR10", (dataset,), {"url": cifar10_url()})
    try:
        root.mkdir(parents=True, exist_ok=True)
        # Only the training split is asked for: both splits come in the same archive.
        dataset(root=str(root), train=True, download=True)
    except Exception as exc:  # URLError, socket errors, torchvision's integrity RuntimeError, ...
        raise DataSourceError(data_missing_message(
            f"Could not download CIFAR-10 into {str(root)!r} ({type(exc).__name__}: {exc}; this machine "
            "probably has no internet access)")) from exc


def _load_path(path: Path, cache_dir, progress: bool, label: str | None = None) -> CifarTensors:
    kind, base = _classify(path)
    label = label or f"{kind}:{path}"
    key = cache_key(kind, base)
    name = f"{path.name}.ttq-cache-{key[:16]}.safetensors"
    candidates = cache_dirs(path, cache_dir)

    for folder in candidates:
        cached = read_cache(folder / name, key)
        if cached is not None:
            log.info("CIFAR-10 from cache %s", folder / name)
            return CifarTensors(*cached, source=label, cache_path=str(folder / name))

    train_x, train_y, test_x, test_y = _decode_source(kind, base, progress)
    data = CifarTensors(train_x, train_y, test_x, test_y, source=label)
    written = write_cache(candidates, name, key, data, label)
    data.cache_path = str(written) if written else None
    return data


def _classify(path: Path) -> tuple[str, Path]:
    """Which reader a path needs: ("batches" | "folder" | "tar", the path it reads)."""
    if path.is_file():
        if path.name.lower().endswith(TAR_SUFFIXES):
            return "tar", path
        raise DataSourceError(
            f"{str(path)!r} is a file but not a tarball (.tar.gz, .tgz, .tar). Accepted: {ACCEPTED_FORMS}."
        )
    if (path / BATCH_FILES[0]).is_file():
        return "batches", path
    if (path / BATCHES_DIR).is_dir():
        return "batches", path / BATCHES_DIR
    if any((path / s).is_dir() for s in SPLITS):
        return "folder", path
    # Allow one wrapping folder, as unpacking an archive often leaves.
    children = [c for c in _visible_subdirs(path) if any((c / s).is_dir() for s in SPLITS)]
    if len(children) == 1:
        return "folder", children[0]
    found = ", ".join(sorted(p.name for p in path.iterdir())[:10]) or "nothing"
    raise DataSourceError(
        f"Directory {str(path)!r} has none of the expected layouts (it holds: {found}). "
        f"Accepted: {ACCEPTED_FORMS}."
    )


def _visible_subdirs(path: Path) -> list[Path]:
    return sorted(c for c in path.iterdir() if c.is_dir() and not c.name.startswith((".", "__")))



def _decode_source(kind: str, base: Path, progress: bool):
    if kind == "batches":
        return _read_batches_dir(base)
    if kind == "folder":
        return _read_image_folder(base, progress)
    return _read_tarball(base, progress)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and dicts only: a pickle can otherwise run arbitrary code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not part of a CIFAR-10 batch")


def _unpickle_batch(raw: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
        data = np.asarray(d[b"data"], dtype=np.uint8)
        labels = np.asarray(d[b"labels"], dtype=np.int64)
        if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
            raise ValueError(f"data has shape {data.shape}, {len(labels)} labels; expected [N, 3072] and N")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
            raise ValueError("labels outside 0..9")
    except Exception as exc:
        raise DataSourceError(
            f"{where} is not a readable CIFAR-10 batch ({type(exc).__name__}: {exc}). "
            "Re-download it or point at another copy."
        ) from exc
    return data.reshape(-1, 3, 32, 32), labels


def _join_batches(parts: dict[str, tuple[np.ndarray, np.ndarray]], where: str):
    missing = [n for n in BATCH_FILES if n not in parts]
    if missing:
        raise DataSourceError(
            f"{where} lacks {', '.join(missing)}: a cifar-10-batches-py folder needs "
            f"{', '.join(BATCH_FILES)}. Re-download it (delete the folder first) or point at another copy."
        )
    train = [parts[n] for n in BATCH_FILES[:5]]
    tx = torch.from_numpy(np.concatenate([d for d, _ in train]))
    ty = torch.from_numpy(np.concatenate([lab for _, lab in train]))
    vx, vy = parts["test_batch"]
    return tx, ty, torch.from_numpy(vx.copy()), torch.from_numpy(vy.copy())


def _read_batches_dir(base: Path):
    parts = {n: _unpickle_batch((base / n).read_bytes(), str(base / n)) for n in BATCH_FILES if (base / n).is_file()}
    return _join_batches(parts, str(base))


def _image_entry(relpath: str) -> tuple[str, int] | None:
    """(split, label) for ``[top/]split/class/file.png``; None for files that are not images of the tree."""
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if len(parts) not in (3, 4) or any(p.startswith((".", "__")) for p in parts):
        return None  # hidden files, __MACOSX resource forks, READMEs, ...
    split, cls, fname = parts[-3:]
    if split not in SPLITS or not fname.lower().endswith(IMAGE_SUFFIXES):
        return None
    if cls not in _CLASS_INDEX:
        raise DataSourceError(
            f"unknown class folder {cls!r} in {relpath!r}: the tree must use the CIFAR-10 class names "
            f"{', '.join(CLASSES)}"
        )
    return split, _CLASS_INDEX[cls]


def _read_image_folder(base: Path, progress: bool):
    items = []
    for split in SPLITS:
        if not (base / split).is_dir():
            continue
        for p in (base / split).rglob("*"):
            entry = _image_entry(str(p.relative_to(base))) if p.is_file() else None
            if entry:
                items.append((entry[0], entry[1], str(p.relative_to(base)), p))
    return _assemble(items, str(base), progress)


def _read_tarball(path: Path, progress: bool):
    items, batches = [], {}
    try:
        # Stream mode reads the compressed file once, front to back, without an index.
        with tarfile.open(path, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                base = m.name.rsplit("/", 1)[-1]
                if base in BATCH_FILES and f"/{BATCHES_DIR}/" in f"/{m.name}":
                    batches[base] = tf.extractfile(m).read()
                    continue
                entry = _image_entry(m.name)
                if entry:
                    items.append((entry[0], entry[1], m.name, tf.extractfile(m).read()))
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DataSourceError(
            f"{str(path)!r} is not a readable tarball ({type(exc).__name__}: {exc}); it may be truncated "
            "or corrupt. Copy or download it again (data/README.md gives the shared copy's sha256)."
        ) from exc
    if batches and not items:
        parts = {n: _unpickle_batch(raw, f"{path}:{n}") for n, raw in batches.items()}
        return _join_batches(parts, str(path))
    return _assemble(items, str(path), progress)


def _assemble(items: list, where: str, progress: bool):
    """Check the tree is complete, then decode its images in a fixed order (split, class, name)."""
    if not items:
        raise DataSourceError(
            f"{where} holds no images in the expected layout: train/<class>/*.png|jpg and "
            f"test/<class>/*.png|jpg (optionally under one top-level folder), classes {', '.join(CLASSES)}."
        )
    problems = []
    for split in SPLITS:
        have = {lab for s, lab, _, _ in items if s == split}
        if not have:
            problems.append(f"split '{split}' is missing")
        elif len(have) < len(CLASSES):
            missing = [CLASSES[i] for i in range(len(CLASSES)) if i not in have]
            problems.append(f"split '{split}' lacks classes {', '.join(missing)}")
    if problems:
        raise DataSourceError(f"{where} is an incomplete CIFAR-10 tree: {'; '.join(problems)}.")
    items.sort(key=lambda it: (SPLITS.index(it[0]), it[1], it[2]))
    x = _decode_images([(name, payload) for _, _, name, payload in items], where, progress)
    y = torch.tensor([lab for _, lab, _, _ in items], dtype=torch.int64)
    n_train = sum(1 for it in items if it[0] == "train")
    return x[:n_train], y[:n_train], x[n_train:], y[n_train:]


def _decode_one(name: str, payload) -> np.ndarray:
    """One image as uint8 [32, 32, 3]; ``payload`` is its bytes or a Path to read them from."""
    from PIL import Image

    raw = payload.read_bytes() if isinstance(payload, Path) else payload
    with Image.open(io.BytesIO(raw)) as im:
        if im.size != (32, 32):
            raise ValueError(f"image is {im.size[0]}x{im.size[1]}, CIFAR-10 images are 32x32")
        return np.asarray(im if im.mode == "RGB" else im.convert("RGB"))


def _decode_images(entries: list, where: str, progress: bool) -> torch.Tensor:
    from tqdm.auto import tqdm

    # One thread on purpose: for 32x32 images most of the time is Python-level work under the GIL,
    # and a thread pool measured 1.5x *slower* here (20,000 JPEGs: 1.8 s in one thread, 2.9 s in two).
    out = np.empty((len(entries), 32, 32, 3), dtype=np.uint8)
    with tqdm(total=len(entries), desc="decoding CIFAR-10", unit="img", disable=not progress,
              mininterval=0.5) as bar:
        for i, (name, payload) in enumerate(entries):
            try:
                out[i] = _decode_one(name, payload)
            except Exception as exc:
                raise DataSourceError(
                    f"cannot decode {name!r} in {where} ({type(exc).__name__}: {exc}). "
                    "Replace or remove that file, or point at another copy."
                ) from exc
            if i % 1000 == 999:
                bar.update(1000)
        bar.update(len(entries) - bar.n)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()

