"""Packed ternary model files: write them, check them, and load them into packed inference layers.

TTQ (Zhu et al., ICLR 2017, Sec. 1 and Sec. 5): at inference a ternary layer needs only its codes
{-1, 0, +1} and the two scales Wp, Wn, which makes the model "nearly 16x smaller" than fp32 at 2 bits per
weight; base-3 packing (:mod:`ttq_lib.bitpack`) gets to 1.6 bits.  The layers that compute with the packed
bytes are :mod:`ttq_lib.packed_layers`.

File layout (a safetensors file, format "ttq-packed", version "1"); for every ternary layer ``L``:

=================  ==========================================================
``L.codes``        uint8, 1-D: the packed codes (:func:`ttq_lib.bitpack.pack_codes`)
``L.wp``, ``L.wn`` 0-dim floats: the scales used at inference (TWN: alpha twice)
``L.shape``        int64, 1-D: the weight's shape
``L.bias``         only if the layer has a bias, as it is
=================  ==========================================================

Every other tensor of the model's ``state_dict`` (first conv, last linear, batch norm with its running
statistics) is stored unchanged under its usual name, so the file is exactly the ``state_dict`` of the
packed model. Metadata: ``format``, ``format_version``, ``scheme``, ``ternary_layers`` (JSON list), the
JSON-encoded checkpoint meta that rebuilds the model (``arch``, ``method``, ``t``, ``sparsity``,
``keep_first``, ``keep_last``, ``mean``, ``std``), and ``checksum`` = ``"sha256:" + hex`` of
:func:`tensor_checksum`.
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
from ..models import DEPTHS, build_model
from ..packed_layers import DECODE_MODES, packed_layer_for
from .atomic import atomic_path
from .model_meta import CheckpointError, load_checked, model_meta, read_tensors

__all__ = ["FORMAT", "FORMAT_VERSION", "PackedFileError", "tensor_checksum", "packed_state_dict", "save_packed",
           "is_packed_file", "read_packed_metadata", "load_packed"]

FORMAT = "ttq-packed"
FORMAT_VERSION = "1"
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
    if meta.get("format_version") != FORMAT_VERSION:
        raise PackedFileError(f"{path} has packed format version {meta.get('format_version')!r}; this ttq_lib "
                              f"reads version {FORMAT_VERSION}: upgrade ttq-workbook or re-pack the checkpoint")
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
    ``scheme``). ``meta`` (for example the dict returned by ``load_model``) overrides what is inferred from
    the model; it must end up with an ``arch`` that ``ttq_lib.models.build_model`` knows.
    """
    tensors = packed_state_dict(model, scheme)
    layers = [name for name, _ in ternary_like_layers(model)]
    info = model_meta(model)
    info.update({k: v for k, v in (meta or {}).items() if k not in _RESERVED})
    if info.get("arch") not in DEPTHS:
        raise ValueError(f"cannot record the architecture: arch={info.get('arch')!r}; pass "
                         f"meta={{'arch': ...}} with one of {', '.join(DEPTHS)} so load_packed can rebuild it")
    # default=str: provenance a caller adds (paths, dates) must not make packing fail.
    header = {k: json.dumps(v, default=str) for k, v in info.items()}
    header.update(format=FORMAT, format_version=FORMAT_VERSION, scheme=scheme,
                  ternary_layers=json.dumps(layers), checksum=tensor_checksum(tensors))
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)
    return path


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
        names = json.loads(raw.get("ternary_layers", "null"))
    except json.JSONDecodeError as e:
        raise PackedFileError(f"{path} has malformed metadata ({e})") from e
    if not isinstance(names, list) or "arch" not in meta:
        raise PackedFileError(f"{path} lacks the 'ternary_layers' or 'arch' metadata needed to rebuild the model")

    try:
        model = build_model(meta["arch"])
    except ValueError as e:
        raise PackedFileError(f"{path}: {e}") from e
    scheme = raw["scheme"]
    for name in names:
        missing = [f"{name}.{s}" for s in ("codes", "wp", "wn", "shape") if f"{name}.{s}" not in tensors]
        if missing:
            raise PackedFileError(f"{path} is missing tensor(s) {missing}; the file is incomplete, pack it again")
        try:
            template = model.get_submodule(name)
        except AttributeError:
            raise PackedFileError(f"{path} names ternary layer {name!r}, which {meta['arch']} does not have") from None
        try:
            packed = packed_layer_for(template, scheme=scheme, decode=decode)
        except ValueError as e:
            raise PackedFileError(f"{path}: layer {name!r}: {e}") from None
        packed.method, packed.t, packed.sparsity = meta.get("method"), meta.get("t"), meta.get("sparsity")
        replace_module(model, name, packed)

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
    meta.update(format=raw["format"], format_version=raw["format_version"], scheme=scheme,
                checksum=raw["checksum"])
    return model.eval(), meta
