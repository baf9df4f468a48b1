"""A checked download: one URL into one file, with a progress bar, kept only if its SHA-256 matches.

The bytes go to a temporary file beside the target and are renamed onto it only once the whole body has
arrived and its hash starts with the expected prefix (the 8 hex digits ``torch.hub`` puts in such file names).
So a cut connection, a wrong file from a mirror or a full disk never leaves a file under the final name.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path


class FetchError(RuntimeError):
    """A download that could not be completed or did not check out; nothing was kept."""


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_checked(url: str, target: str | os.PathLike, sha256_prefix: str, progress: bool = True,
                  timeout_s: float = 30.0) -> Path:
    """Download ``url`` to ``target`` if its SHA-256 starts with ``sha256_prefix``; the target's path.

    Raises :class:`FetchError` naming the URL for a network failure, an HTTP error, a body shorter than its
    Content-Length, or a hash mismatch (the downloaded bytes are deleted)."""
    from tqdm.auto import tqdm

    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    h, got = hashlib.sha256(), 0
    try:
        with os.fdopen(fd, "wb") as out:
            try:
                with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                    size = int(resp.headers.get("Content-Length") or 0) or None
                    with tqdm(total=size, unit="B", unit_scale=True, desc=f"downloading {target.name}",
                              disable=not progress, mininterval=0.5) as bar:
                        for block in iter(lambda: resp.read(1 << 16), b""):
                            out.write(block)
                            h.update(block)
                            got += len(block)
                            bar.update(len(block))
            except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL
                raise FetchError(f"could not download {url}: {type(exc).__name__}: {exc}") from exc
            if size is not None and got != size:
                raise FetchError(f"the download of {url} ended after {got} of {size} bytes (connection cut)")
            out.flush()
            os.fsync(out.fileno())
        digest = h.hexdigest()
        if not digest.startswith(sha256_prefix):
            raise FetchError(f"{url} has SHA-256 {digest[:16]}..., expected one starting with {sha256_prefix}: "
                             "the file is damaged or not the published one, so it was deleted; check the URL "
                             "(or the mirror in $TTQ_PRETRAINED_URL) and try again")
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
        return target
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
