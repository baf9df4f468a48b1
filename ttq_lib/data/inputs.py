"""Where the inputs come from: CIFAR-10 and the pretrained full-precision ResNets, found by one resolver.

Every entry point (``ttq train``, ``ttq demo``, plans, notebooks, benchmarks) asks here, and each input is
looked for in this order, the first that has it wins:

1. an explicit argument (``--data``, ``--checkpoint``, a plan's ``data`` / ``pretrained``);
2. the environment: ``$TTQ_DATA`` (any source :func:`ttq_lib.data.load_cifar10` reads), ``$TTQ_PRETRAINED_DIR``
   (a folder holding the ``.th`` files under their published names);
3. an offline copy beside the checkout, ``../shared`` (``data/cifar10-jpeg.tar.gz``, ``pretrained/*.th``), or
   the folder in ``$TTQ_OFFLINE_COPY`` (empty: none);
4. the user cache, ``$TTQ_CACHE`` or ``~/.cache/ttq-workbook``;
5. a download into that cache: the original CIFAR-10 through torchvision (from ``$TTQ_CIFAR10_URL`` when set,
   a mirror); the pretrained ResNets of
   akamaster/pytorch_resnet_cifar10 from ``$TTQ_PRETRAINED_URL`` (default: that project's GitHub folder),
   each checked against the SHA-256 prefix in its file name.

Nothing falls back to synthetic data: that is only ever used when asked for by name (``synthetic``).
:func:`input_origin` answers "where did this input come from" for any path; results record its answer.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from .fetch import FetchError, fetch_checked, sha256_of

ENV_DATA = "TTQ_DATA"
ENV_PRETRAINED_DIR = "TTQ_PRETRAINED_DIR"
ENV_PRETRAINED_URL = "TTQ_PRETRAINED_URL"
ENV_CACHE = "TTQ_CACHE"
ENV_OFFLINE = "TTQ_OFFLINE_COPY"
ENV_CIFAR10_URL = "TTQ_CIFAR10_URL"

#: The published full-precision CIFAR ResNets (Idelbayev, BSD 2-clause); 8 hex digits = start of their SHA-256.
PRETRAINED_FILES = {
    "resnet20": "resnet20-12fca82f.th",
    "resnet32": "resnet32-d509ac18.th",
    "resnet44": "resnet44-014dd654.th",
    "resnet56": "resnet56-4bfd9763.th",
}
DEFAULT_PRETRAINED_URL = "https://github.com/akamaster/pytorch_resnet_cifar10/raw/master/pretrained_models/"
#: torchvision's address of the original CIFAR-10 (python batches); ``$TTQ_CIFAR10_URL`` names a mirror.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFLINE_TARBALL = "data/cifar10-jpeg.tar.gz"
BATCHES_DIR = "cifar-10-batches-py"


class InputUnavailable(RuntimeError):
    """No step of the resolver has the input: not given, not in the environment, not local, not downloadable."""


#: What a CIFAR-10 source may be, and where one is found when none is given (``--data``'s help).
DATA_HELP = ("CIFAR-10 source: a cifar-10-batches-py folder, an image-folder tree or its .tar.gz "
             "(train/<class>/..., test/<class>/...), 'download' (torchvision, into the user cache), or 'synthetic' "
             "(made-up images, on purpose only). Default: $TTQ_DATA, else the offline copy ../shared, else the user "
             "cache ($TTQ_CACHE or ~/.cache/ttq-workbook), else a download (see `ttq inputs`)")

#: The test split of the JPEG copy of CIFAR-10 this project's committed runs used (data/README.md).
JPEG_COPY_TEST_SHA256 = "56408e16fefefc2d653e651fc019204c8b6c429b1f1e97679865d69cf85adbcf"
#: Test splits of known copies, by the SHA-256 of their images and labels (``cifar10.test_split_sha256``).
KNOWN_TEST_SPLITS = {
    JPEG_COPY_TEST_SHA256: "CIFAR-10 (JPEG copy)",
}


@dataclass(frozen=True)
class Input:
    """A resolved input: ``value`` is what to load (a path, ``download`` or ``synthetic:N``); ``origin`` says
    where it came from, in words ("$TTQ_DATA", "offline copy /x/shared", "user cache /y", "downloaded from ...")."""
    value: str
    origin: str

    def __str__(self) -> str:
        return f"{self.value} ({self.origin})"


def checkout() -> Path | None:
    """The source checkout this package was imported from (an editable install), None for an installed copy."""
    root = Path(__file__).resolve().parents[2]
    toml = root / "pyproject.toml"
    return root if toml.is_file() and 'name = "ttq-workbook"' in toml.read_text(errors="replace") else None


def offline_copy() -> Path | None:
    """The offline copy's folder: ``$TTQ_OFFLINE_COPY`` when set (empty: none), else ``../shared`` beside the
    checkout when that exists."""
    if ENV_OFFLINE in os.environ:
        value = os.environ[ENV_OFFLINE]
        return Path(value).expanduser() if value else None
    root = checkout()
    shared = root.parent / "shared" if root else None
    return shared if shared is not None and shared.is_dir() else None


def cache_dir() -> Path:
    """The user cache: ``$TTQ_CACHE``, else ``~/.cache/ttq-workbook``."""
    return Path(os.environ.get(ENV_CACHE) or Path.home() / ".cache" / "ttq-workbook").expanduser()


def _within(path: Path, folder: Path | None) -> bool:
    if folder is None:
        return False
    try:
        path.resolve().relative_to(folder.resolve())
        return True
    except ValueError:
        return False


def input_origin(value: str | os.PathLike | None) -> str:
    """Where an input came from, in words, judged by where it lies: the one answer results record."""
    if value is None:
        return "not given"
    text = str(value)
    if text.startswith("synthetic"):
        return "synthetic (asked for by name)"
    if text == "download":
        return f"download of the original CIFAR-10 into {cache_dir()}"
    path = Path(text).expanduser()
    if os.environ.get(ENV_DATA) and path == Path(os.environ[ENV_DATA]).expanduser():
        return f"${ENV_DATA}"
    if os.environ.get(ENV_PRETRAINED_DIR) and _within(path, Path(os.environ[ENV_PRETRAINED_DIR])):
        return f"${ENV_PRETRAINED_DIR}"
    copy = offline_copy()
    if _within(path, copy):
        return f"offline copy {copy}"
    if _within(path, cache_dir()):
        return f"user cache {cache_dir()}"
    return "given path"


def _where_to_look() -> str:
    copy = offline_copy()
    return (f"an offline copy ({copy if copy else 'none: no ../shared beside the checkout and no $' + ENV_OFFLINE})"
            f" and the user cache {cache_dir()} (${ENV_CACHE})")


def resolve_data(arg: str | os.PathLike | None = None, download: bool = True) -> Input:
    """The CIFAR-10 source to load (see the module docstring for the order).  ``download=False`` raises
    :class:`InputUnavailable` instead of answering ``download``."""
    if arg is not None and str(arg).strip():
        return Input(str(arg).strip(), input_origin(str(arg).strip()))
    if os.environ.get(ENV_DATA):
        return Input(os.environ[ENV_DATA], f"${ENV_DATA}")
    copy = offline_copy()
    if copy is not None and (copy / OFFLINE_TARBALL).is_file():
        return Input(str(copy / OFFLINE_TARBALL), f"offline copy {copy}")
    cached = cache_dir() / BATCHES_DIR
    if (cached / "data_batch_1").is_file():
        return Input(str(cached), f"user cache {cache_dir()}")
    if not download:
        raise InputUnavailable(data_missing_message())
    return Input("download", input_origin("download"))


def cifar10_url() -> str:
    """Where the original CIFAR-10 is downloaded from: ``$TTQ_CIFAR10_URL`` (a mirror of the same file, which
    torchvision checks against its MD5) or the original address."""
    return os.environ.get(ENV_CIFAR10_URL) or CIFAR10_URL


def data_missing_message(reason: str = "") -> str:
    """What to do when no CIFAR-10 can be found or downloaded."""
    return ((f"{reason}. " if reason else "No CIFAR-10 found. ") +
            f"Looked in ${ENV_DATA} ({os.environ.get(ENV_DATA) or 'unset'}), {_where_to_look()}; the original comes from {cifar10_url()} "
            f"(torchvision downloads it into {cache_dir() / BATCHES_DIR}). Without internet, point at a copy: "
            f"--data PATH or {ENV_DATA}=PATH, where PATH is a cifar-10-batches-py folder, an image-folder tree "
            "train/<class>/*.png|jpg + test/<class>/... or its .tar.gz; or pass 'synthetic' to use made-up "
            "images on purpose (no accuracy it gives means anything)")


def pretrained_file_name(model: str) -> str:
    if model not in PRETRAINED_FILES:
        raise ValueError(f"no published pretrained {model}: pretrained CIFAR ResNets exist for "
                         f"{', '.join(PRETRAINED_FILES)}")
    return PRETRAINED_FILES[model]


def pretrained_url(model: str) -> str:
    """Where ``model``'s file is downloaded from: ``$TTQ_PRETRAINED_URL`` (a mirror) or the published folder."""
    base = os.environ.get(ENV_PRETRAINED_URL) or DEFAULT_PRETRAINED_URL
    return base.rstrip("/") + "/" + pretrained_file_name(model)


def _hash_prefix(name: str) -> str:
    return name.rsplit("-", 1)[1].split(".")[0]


def _checked(path: Path, origin: str) -> Input:
    """A local pretrained file, if it is the published one; a damaged user file is named, never deleted."""
    prefix, digest = _hash_prefix(path.name), sha256_of(path)
    if not digest.startswith(prefix):
        raise InputUnavailable(f"{path} ({origin}) has SHA-256 {digest[:16]}..., not the published file "
                               f"(its name says {prefix}...): replace it with a fresh download")
    return Input(str(path), origin)


def resolve_pretrained(model: str = "resnet20", arg: str | os.PathLike | None = None, download: bool = True,
                       progress: bool = True) -> Input:
    """The pretrained full-precision ``model`` (resnet20/32/44/56), found or downloaded (module docstring)."""
    if arg is not None and str(arg).strip():
        path = Path(arg).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist; omit it to use the published pretrained "
                                    f"{model} ({pretrained_file_name(model) if model in PRETRAINED_FILES else ''})")
        return Input(str(path), input_origin(path))
    name = pretrained_file_name(model)
    places = [(Path(os.environ[ENV_PRETRAINED_DIR]).expanduser(), f"${ENV_PRETRAINED_DIR}")] \
        if os.environ.get(ENV_PRETRAINED_DIR) else []
    copy = offline_copy()
    if copy is not None:
        places.append((copy / "pretrained", f"offline copy {copy}"))
    for folder, origin in places:
        if (folder / name).is_file():
            return _checked(folder / name, origin)
    cached = cache_dir() / "pretrained" / name
    if cached.is_file():
        if sha256_of(cached).startswith(_hash_prefix(name)):
            return Input(str(cached), f"user cache {cache_dir()}")
        cached.unlink()  # a cache file is ours: a damaged one is fetched again
    url = pretrained_url(model)
    if not download:
        raise InputUnavailable(pretrained_missing_message(model, f"no {name} found"))
    try:
        fetch_checked(url, cached, _hash_prefix(name), progress=progress)
    except FetchError as exc:
        raise InputUnavailable(pretrained_missing_message(model, str(exc))) from exc
    return Input(str(cached), f"downloaded from {url} into the user cache {cache_dir()}")


def pretrained_missing_message(model: str, reason: str) -> str:
    name = pretrained_file_name(model)
    return (f"{reason}. The pretrained {model} is the file {name} (SHA-256 starting {_hash_prefix(name)}), "
            f"published at {pretrained_url(model)}. Looked in ${ENV_PRETRAINED_DIR} "
            f"({os.environ.get(ENV_PRETRAINED_DIR) or 'unset'}), {_where_to_look()}. Without internet, download it "
            f"elsewhere and place it in a folder named by {ENV_PRETRAINED_DIR}=FOLDER (or in the cache folder "
            f"{cache_dir() / 'pretrained'}); with a mirror or a course server, set {ENV_PRETRAINED_URL}=BASE_URL")
