"""Packed ternary model files: write them, check them, and load them into packed inference layers.

TTQ (Zhu et al., ICLR 2017, Sec. 1 and Sec. 5): at inference a ternary layer needs only its codes
{-1, 0, +1} and the two scales Wp, Wn, which makes the model "nearly 16x smaller" than fp32 at 2 bits per
weight; base-3 packing (:mod:`ttq_lib.bitpack`) gets to 1.6 bits.  The layers that compute with the packed
bytes are :mod:`ttq_lib.packed_layers`.

File layout (a safetensors file, format "ttq-packed", version "2"); for every ternary layer ``L``:

=================  ==========================================================
``L.codes``        uint8, 1-D: the packed codes (:func:`ttq_lib.bitpack.pack_codes`)
``L.wp``, ``L.wn`` 0-dim floats: the scales used at inference (TWN: alpha twice)
``L.shape``        int64, 1-D: the weight's shape
``L.bias``         only if the layer has a bias, as it is
=================  ==========================================================

Every other tensor of the model's ``state_dict`` (first conv, last linear, batch norm with its running
statistics) is stored unchanged under its usual name, so the file is exactly the ``state_dict`` of the
packed model. Metadata: ``format``, ``format_version``, ``scheme``, ``ternary_layers`` (JSON list of
``{"name", "method", "t", "sparsity"}``, each layer's own rule), the JSON-encoded checkpoint meta that rebuilds
the model (``arch``, which may be any name :func:`ttq_lib.models.build_model` knows, ``num_classes``,
``method``, ``t``, ``sparsity``, ``keep_first``, ``keep_last``, ``mean``, ``std``), and ``checksum`` =
``"sha256:" + hex`` of :func:`tensor_checksum`.  Version "1" files (``ternary_layers`` a list of names, one
rule for all of them in ``method``/``t``/``sparsity``) still load.  ``save_packed`` rebuilds the packed model
from the metadata before writing and refuses, naming the reason, a model the file could not give back.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

from ..bitpack import SCHEMES, check_scheme, pack_codes
from ..convert import replace_module, ternary_like_layers
from ..models import build_model
from ..packed_layers import DECODE_MODES, packed_layer_for
from .atomic import atomic_path
from .model_meta import CheckpointError, check_rebuilds, load_checked, model_meta, read_tensors

__all__ = ["FORMAT", "FORMAT_VERSION", "PackedFileError", "tensor_checksum", "packed_state_dict", "save_packed",
           "is_packed_file", "read_packed_metadata", "load_packed"]

FORMAT = "ttq-packed"
FORMAT_VERSION = "2"
#: Versions :func:`load_packed` reads: "1" lists the ternary layers by name only, with one rule for all.
READABLE_VERSIONS = ("1", "2")
# Keys written by this module itself; a caller's meta may not override them.
_RESERVED = ("format", "format_version", "scheme", "checksum", "ternary_layers")
# A real header is a few hundred kB at most; a larger length prefix means the file is something else.
_MAX_HEADER = 100 * 2**20


class PackedFileError(CheckpointError):
    """A packed model file that cannot be read: not safetensors, truncated, corrupt, or unknown version."""


# --------------------------------------------------------------------------------------------------
# Checksum and header


def tensor_checksum(tensors: dict[str, torch.Tensor]) -> str:
    """``"sha256:<hex>"`` over the tensors in sorted-key order.

    Each tensor contributes its name, dtype and shape (so swapped or reshaped tensors are caught too),
    then its raw bytes in C order.
    """
    h = hashlib.sha256()
    for key in sorted(tensors):
        t = tensors[key].detach().cpu().contiguous()
        h.update(f"{key}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return "sha256:" + h.hexdigest()


def _read_header(path: Path, check_data: bool = True) -> dict:
    """Parse a safetensors header ourselves, so each failure gets its own clear message."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise PackedFileError(f"{path} is not a safetensors file: only {size} bytes long")
            n = int.from_bytes(prefix, "little")
            if n > size - 8:
                first = f.read(1)
                if n <= _MAX_HEADER and first == b"{":
                    raise PackedFileError(f"{path} is truncated: its header alone needs {n} bytes, "
                                          f"the file has {size - 8}; copy it again")
                raise PackedFileError(f"{path} is not a safetensors file (bad header length); "
                                      "packed files are written by ttq_lib.formats.save_packed / `ttq pack`")
            raw = f.read(n)
    except OSError as e:
        raise PackedFileError(f"cannot read {path}: {e}") from e
    try:
        header = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise PackedFileError(f"{path} is not a safetensors file (header is not JSON)") from None
    if not isinstance(header, dict):
        raise PackedFileError(f"{path} is not a safetensors file (header is not a JSON object)")
    if check_data:
        try:
            end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
        except (TypeError, KeyError, IndexError, ValueError):
            raise PackedFileError(f"{path} is not a safetensors file (malformed tensor entries)") from None
        if end > size - 8 - n:
            raise PackedFileError(f"{path} is truncated: the header describes {end} data bytes, only "
                                  f"{size - 8 - n} are present; copy or pack it again")
    return header


def read_packed_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The raw (string) metadata of a packed file, after checking format, version and scheme."""
    path = Path(path)
    meta = _read_header(path).get("__metadata__") or {}
    if meta.get("format") != FORMAT:
        raise PackedFileError(f"{path} is not a ttq packed file (format={meta.get('format')!r}); "
                              "load ordinary checkpoints with ttq_lib.load_model")
    if meta.get("format_version") not in READABLE_VERSIONS:
        raise PackedFileError(f"{path} has packed format version {meta.get('format_version')!r}; this ttq_lib "
                              f"reads versions {', '.join(READABLE_VERSIONS)}: upgrade ttq-workbook or re-pack "
                              "the checkpoint")
    if meta.get("scheme") not in SCHEMES:
        raise PackedFileError(f"{path} uses unknown packing scheme {meta.get('scheme')!r}; "
                              f"known schemes: {', '.join(SCHEMES)}")
    return meta


def is_packed_file(path: str | os.PathLike) -> bool:
    """True if ``path`` is a safetensors file whose metadata says format "ttq-packed".

    Only the header is read. Unreadable or foreign files give False; a packed file with a bad version or
    a truncated data section gives True, so that :func:`load_packed` reports the precise problem.
    """
    try:
        header = _read_header(Path(path), check_data=False)
    except PackedFileError:
        return False
    meta = header.get("__metadata__")
    return isinstance(meta, dict) and meta.get("format") == FORMAT


# --------------------------------------------------------------------------------------------------
# Save


@torch.no_grad()
def packed_state_dict(model: nn.Module, scheme: str = "base3") -> dict[str, torch.Tensor]:
    """The tensors of a packed file for ``model`` (see the module docstring for the layout)."""
    check_scheme(scheme)
    layers = ternary_like_layers(model)
    if not layers:
        raise ValueError("the model has no ternary layers, so there is nothing to pack; convert it with "
                         "ttq_lib.ternarize_model and fine-tune it first")
    prefixes = tuple(f"{name}." for name, _ in layers)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
               if not k.startswith(prefixes)}
    for name, m in layers:
        codes = m.ternary_codes()
        wp, wn = m.scales()
        for s_name, s in (("wp", wp), ("wn", wn)):
            if not (math.isfinite(float(s)) and float(s) >= 0):
                raise ValueError(f"layer {name}: scale {s_name}={float(s)} is not a finite non-negative "
                                 "number; clamp the scales (ttq_lib.clamp_scales_) or retrain")
        tensors[f"{name}.codes"] = pack_codes(codes, scheme).cpu()
        tensors[f"{name}.wp"] = wp.detach().reshape(()).cpu().contiguous()
        tensors[f"{name}.wn"] = wn.detach().reshape(()).cpu().contiguous()
        tensors[f"{name}.shape"] = torch.tensor(tuple(codes.shape), dtype=torch.int64)
        if getattr(m, "bias", None) is not None:
            tensors[f"{name}.bias"] = m.bias.detach().cpu().contiguous()
    return tensors


def save_packed(model: nn.Module, path: str | os.PathLike, scheme: str = "base3",
                meta: dict | None = None) -> Path:
    """Write ``model`` as a packed ternary file, atomically (temp file, then ``os.replace``).

    ``model`` holds ternary layers (``ttq_lib.layers``) or packed ones (re-packing, e.g. to change
    ``scheme``). ``meta`` (for example the dict returned by ``load_model``) adds keys or sets ``arch`` and
    ``num_classes``; the ``arch`` must be one ``ttq_lib.models.build_model`` knows.  Raises ValueError, and
    writes nothing, if :func:`load_packed` could not rebuild the model from the file.
    """
    tensors = packed_state_dict(model, scheme)
    info = model_meta(model, **{k: v for k, v in (meta or {}).items() if k not in _RESERVED})
    rules = info.pop("ternary_layers")
    # default=str: provenance a caller adds (paths, dates) must not make packing fail.
    header = {k: json.dumps(v, default=str) for k, v in info.items()}
    header.update(format=FORMAT, format_version=FORMAT_VERSION, scheme=scheme, ternary_layers=json.dumps(rules))
    # Checked against the metadata as load_packed will decode it, so the file that is written also loads.
    decoded = {k: json.loads(v) for k, v in header.items() if k not in _RESERVED}
    decoded_rules = json.loads(header["ternary_layers"])
    check_rebuilds(model, decoded, tensors, lambda m: packed_skeleton(m, decoded_rules, scheme),
                   frozenset(r["name"] for r in decoded_rules))
    header["checksum"] = tensor_checksum(tensors)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


def packed_skeleton(meta: dict, rules: list[dict], scheme: str, decode: str = "lazy") -> nn.Module:
    """The model of ``meta["arch"]`` with each layer of ``rules`` replaced by an empty packed layer.

    What :func:`load_packed` loads the tensors into; raises ValueError if the architecture or a layer does not
    fit.  Each packed layer keeps its rule (method, t, sparsity) for the record, so a re-pack writes it again.
    """
    num_classes = meta.get("num_classes")
    model = build_model(meta["arch"]) if num_classes is None else build_model(meta["arch"], num_classes)
    for rule in rules:
        name = rule["name"]
        try:
            template = model.get_submodule(name)
        except AttributeError:
            raise ValueError(f"names ternary layer {name!r}, which {meta['arch']} does not have") from None
        try:
            packed = packed_layer_for(template, scheme=scheme, decode=decode)
        except ValueError as e:
            raise ValueError(f"layer {name!r}: {e}") from None
        packed.method, packed.t, packed.sparsity = rule.get("method"), rule.get("t"), rule.get("sparsity")
        replace_module(model, name, packed)
    return model


def _rules(raw_layers, meta: dict, version: str) -> list[dict] | None:
    """Each ternary layer's rule from the file: version 2 stores them, version 1 only names the layers."""
    if not isinstance(raw_layers, list):
        return None
    if version == "1" and all(isinstance(n, str) for n in raw_layers):
        return [{"name": n, "method": meta.get("method"), "t": meta.get("t"), "sparsity": meta.get("sparsity")}
                for n in raw_layers]
    if all(isinstance(r, dict) and isinstance(r.get("name"), str) for r in raw_layers):
        return raw_layers
    return None


# --------------------------------------------------------------------------------------------------
# Load


def load_packed(path: str | os.PathLike, decode: str = "lazy") -> tuple[nn.Module, dict]:
    """Rebuild a model from a packed file; ternary layers become ``PackedTernaryConv2d/Linear``.

    ``decode="lazy"`` decodes the codes in every forward (memory stays packed); ``"once"`` decodes at load.
    Returns ``(model, meta)`` with ``model`` in eval mode and ``meta`` the decoded checkpoint meta plus
    ``format``, ``format_version``, ``scheme``, ``checksum``. Raises :class:`PackedFileError` for files that are
    not safetensors, truncated, of another version or scheme, corrupt (checksum), or missing tensors.
    """
    if decode not in DECODE_MODES:
        raise ValueError(f"decode={decode!r} is not one of {DECODE_MODES}")
    path = Path(path)
    raw = read_packed_metadata(path)
    tensors = read_tensors(path, PackedFileError)
    try:
        meta = {k: json.loads(v) for k, v in raw.items() if k not in _RESERVED}
        rules = _rules(json.loads(raw.get("ternary_layers", "null")), meta, raw["format_version"])
    except json.JSONDecodeError as e:
        raise PackedFileError(f"{path} has malformed metadata ({e})") from e
    if rules is None or "arch" not in meta:
        raise PackedFileError(f"{path} lacks the 'ternary_layers' or 'arch' metadata needed to rebuild the model")

    scheme = raw["scheme"]
    names = [r["name"] for r in rules]
    for name in names:
        missing = [f"{name}.{s}" for s in ("codes", "wp", "wn", "shape") if f"{name}.{s}" not in tensors]
        if missing:
            raise PackedFileError(f"{path} is missing tensor(s) {missing}; the file is incomplete, pack it again")
    try:
        model = packed_skeleton(meta, rules, scheme, decode)
    except ValueError as e:
        raise PackedFileError(f"{path}: {e}") from e

    load_checked(model, tensors, path, PackedFileError)
    # Checked after the structure so that a missing tensor is named rather than reported as corruption.
    if tensor_checksum(tensors) != raw.get("checksum"):
        raise PackedFileError(f"{path} is corrupt: the checksum of its tensors does not match the one stored "
                              "at packing time; copy or pack it again")
    for name in names:
        try:
            model.get_submodule(name).finish_load_()
        except ValueError as e:
            raise PackedFileError(f"{path}, layer {name}: {e}") from None
    if raw["format_version"] != "1":  # version 1 files give back their metadata as they always did
        meta["ternary_layers"] = rules
    meta.update(format=raw["format"], format_version=raw["format_version"], scheme=scheme,
                checksum=raw["checksum"])
    return model.eval(), meta
