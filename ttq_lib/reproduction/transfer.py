"""Carry a plan's run folders between machines as a few checked files: a GPU call's results come home.

A lent GPU machine sends back only a few files of limited size, and each call starts bare.  So a call runs the
plan, then :func:`export_plan` packs ``results/<plan>/`` into one gzip'd tar cut into parts of at most
``part_mib`` (a finished run without its ``state.pt``, which only resuming needs; an unfinished run whole, so
the next call or a CPU session continues it) plus a manifest with the SHA-256 of the whole archive.  At home
:func:`import_plan` checks the parts against the manifest, unpacks them beside the plan folder and merges them
run by run, never losing a result:

* a run that is finished here is kept as it is (it may be committed; the incoming copy is ignored);
* a run that is new here, or unfinished here and further along in the incoming copy (finished, or more
  committed epochs), is replaced by the incoming one; otherwise the local one is kept.

``ttq reproduce PLAN --export DIR`` and ``ttq reproduce PLAN --import DIR`` call these;
``scripts/device_reproduce.sh`` is the GPU call's side.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from ..formats.atomic import write_json_atomic
from ..training.history import read_history

__all__ = ["export_plan", "import_plan", "MANIFEST"]

MANIFEST = "{plan}.manifest.json"
# Never carried: the runner's lock and state, and partial files of an interrupted atomic write.
SKIP_NAMES = {".runner.lock", ".runner.json"}


def _finished(folder: Path) -> bool:
    return (folder / "metrics.json").is_file()


def _epochs(folder: Path) -> int:
    return len(read_history(folder)) if (folder / "history.jsonl").is_file() else 0


def _members(plan_dir: Path):
    for run in sorted(p for p in plan_dir.iterdir() if p.is_dir()):
        for f in sorted(run.rglob("*")):
            if not f.is_file() or f.name in SKIP_NAMES or f.name.endswith(".tmp"):
                continue
            if f.name == "state.pt" and _finished(run):
                continue  # only resuming needs it
            yield f, f"{plan_dir.name}/{f.relative_to(plan_dir)}"


def export_plan(plan_dir: str | os.PathLike, out_dir: str | os.PathLike, part_mib: float = 15.0,
                max_parts: int = 6) -> list[Path]:
    """Pack ``plan_dir`` into ``out_dir`` as ``<plan>.tar.gz.000``, ``.001``, ... and the manifest; the paths."""
    plan_dir, out_dir = Path(plan_dir), Path(out_dir)
    if not plan_dir.is_dir():
        raise FileNotFoundError(f"{plan_dir} does not exist: nothing to export (run the plan first)")
    out_dir.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz", compresslevel=1) as tar:  # checkpoints barely compress
        for path, name in _members(plan_dir):
            tar.add(path, arcname=name, recursive=False)
    data = buf.getvalue()
    part = int(part_mib * 2 ** 20)
    parts = [data[i:i + part] for i in range(0, len(data), part)] or [b""]
    if len(parts) > max_parts:
        raise ValueError(f"{plan_dir} packs to {len(data) / 2 ** 20:.1f} MiB, {len(parts)} parts of {part_mib:g} MiB, "
                         f"more than the {max_parts} that may be sent; export a subset (run with --only) or "
                         "send the parts in several calls")
    written = []
    for i, chunk in enumerate(parts):
        path = out_dir / f"{plan_dir.name}.tar.gz.{i:03d}"
        path.write_bytes(chunk)
        written.append(path)
    manifest = out_dir / MANIFEST.format(plan=plan_dir.name)
    write_json_atomic(manifest, {"plan": plan_dir.name, "parts": [p.name for p in written],
                                 "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest(),
                                 "runs": sorted(p.name for p in plan_dir.iterdir() if p.is_dir())})
    return written + [manifest]


def _read_parts(in_dir: Path, plan: str) -> bytes:
    manifest_path = in_dir / MANIFEST.format(plan=plan)
    if not manifest_path.is_file():
        raise FileNotFoundError(f"{in_dir} holds no {manifest_path.name}: pass the folder `ttq reproduce "
                                f"--export` wrote for plan {plan!r}")
    manifest = json.loads(manifest_path.read_text())
    missing = [p for p in manifest["parts"] if not (in_dir / p).is_file()]
    if missing:
        raise FileNotFoundError(f"{in_dir} lacks part(s) {', '.join(missing)} of {manifest_path.name}")
    data = b"".join((in_dir / p).read_bytes() for p in manifest["parts"])
    if len(data) != manifest["bytes"] or hashlib.sha256(data).hexdigest() != manifest["sha256"]:
        raise ValueError(f"the parts in {in_dir} do not match {manifest_path.name} (size or SHA-256 differ: a "
                         "part was cut short or mixed with another export); copy them again")
    return data


def import_plan(in_dir: str | os.PathLike, results: str | os.PathLike, plan: str) -> list[str]:
    """Merge an export of ``plan`` from ``in_dir`` into ``results/<plan>/``; one line per run saying what
    happened (see the module docstring for the rules)."""
    in_dir, results = Path(in_dir), Path(results)
    data = _read_parts(in_dir, plan)
    target = results / plan
    target.mkdir(parents=True, exist_ok=True)
    lines = []
    with tempfile.TemporaryDirectory(prefix=".import-", dir=target) as tmp:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
            for member in tar.getmembers():
                parts = Path(member.name).parts
                if not member.isfile() or member.name.startswith("/") or ".." in parts or parts[0] != plan:
                    raise ValueError(f"the export holds {member.name!r}, which is no file of plan {plan}: refused")
            # the "data" filter (Python >= 3.10.12 / 3.11.4) also refuses links and special files; the loop
            # above already admits plain files of this plan only
            tar.extractall(tmp, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
        incoming_root = Path(tmp) / plan
        for run in sorted(p for p in incoming_root.iterdir() if p.is_dir()) if incoming_root.is_dir() else []:
            local = target / run.name
            if not local.exists():
                shutil.move(str(run), str(local))
                lines.append(f"{run.name}: added ({'finished' if _finished(local) else f'epoch {_epochs(local)}'})")
            elif _finished(local):
                lines.append(f"{run.name}: kept (finished here)")
            elif _finished(run) or _epochs(run) > _epochs(local):
                old = Path(tmp) / f"{run.name}.replaced"
                local.rename(old)  # moved aside first: a crash between the two renames leaves both on disk
                shutil.move(str(run), str(local))
                lines.append(f"{run.name}: updated to {'finished' if _finished(local) else f'epoch {_epochs(local)}'}"
                             f" (was epoch {_epochs(old)})")
            else:
                lines.append(f"{run.name}: kept (epoch {_epochs(local)} here, {_epochs(run)} incoming)")
    return lines
