"""Packed ternary model files and the inference layers that read them.

TTQ (Zhu et al., ICLR 2017, Sec. 1 and Sec. 5): at inference a ternary layer needs only its codes
{-1, 0, +1} and the two scales Wp, Wn, which makes the model "nearly 16x smaller" than fp32 at 2 bits per
weight; base-3 packing (:mod:`ttq_lib.packing`) gets to 1.6 bits.

File layout (a safetensors file, format "ttq-packed", version "1"); for every ternary layer ``L``:

=================  ==========================================================
``L.codes``        uint8, 1-D: the packed codes (:func:`ttq_lib.packing.pack_codes`)
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
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .atomic import atomic_path
from .packing import (
    CODES_PER_BYTE,
    SCHEMES,
    check_scheme,
    digit_table,
    pack_codes,
    packed_nbytes,
    unpack_codes,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "DECODE_MODES",
    "PackedFileError",
    "PackedTernaryConv2d",
    "PackedTernaryLinear",
    "ternary_like_layers",
    "tensor_checksum",
    "decode_weight",
    "save_packed",
    "pack_checkpoint",
    "is_packed_file",
    "read_packed_metadata",
    "load_packed",
]

FORMAT = "ttq-packed"
FORMAT_VERSION = "1"
DECODE_MODES = ("lazy", "once")
# Keys written by this module itself; a caller's meta may not override them.
_RESERVED = ("format", "format_version", "scheme", "checksum", "ternary_layers")
# A real header is a few hundred kB at most; a larger length prefix means the file is something else.
_MAX_HEADER = 100 * 2**20


class PackedFileError(ValueError):
    """A packed model file that cannot be read: not safetensors, truncated, corrupt, or unknown version."""


# --------------------------------------------------------------------------------------------------
# Inference layers


def decode_weight(codes: torch.Tensor, shape: tuple[int, ...], scheme: str, wp: torch.Tensor,
                  wn: torch.Tensor) -> torch.Tensor:
    """Decode packed codes straight to the ternary weight {+wp, 0, -wn} (Eq. 6 of the paper).

    A 256-entry table maps every byte to its 4 or 5 weight values, so decoding is a single gather; the
    values are copies of ``wp``/``wn``, hence bit-identical to the unpacked layer's ``quantized_weight()``.
    The digit 3 (never produced by a valid packing) decodes to NaN so corrupt data cannot pass unseen.
    """
    numel = math.prod(shape)
    values = torch.stack([-wn, torch.zeros_like(wp), wp, torch.full_like(wp, float("nan"))])
    # int32 indices and index_select: measured ~2x faster on CPU than int64 advanced indexing.
    table = digit_table(scheme, codes.device, torch.int32)
    byte_values = values.index_select(0, table.reshape(-1)).view(256, CODES_PER_BYTE[scheme])
    return byte_values.index_select(0, codes.int()).reshape(-1)[:numel].view(shape)


class _PackedTernary(nn.Module):
    """Shared state of the packed layers: packed codes, scales, shape, optional bias.

    ``decode="lazy"`` keeps only the packed bytes and decodes them in every ``forward`` (smallest memory);
    ``decode="once"`` also keeps the decoded weight (a non-persistent buffer) and skips decoding later.
    The layer mirrors :class:`ttq_lib.layers.TernaryMixin`'s ``ternary_codes()``/``scales()`` so that
    packed models can be measured (:mod:`ttq_lib.size`) and re-packed with another scheme.
    """

    def _setup_packed(self, weight_shape, bias: bool, scheme: str, decode: str, dtype, device) -> None:
        if decode not in DECODE_MODES:
            raise ValueError(f"decode={decode!r} is not one of {DECODE_MODES}")
        self.scheme = check_scheme(scheme)
        self.decode = decode
        self.weight_shape = tuple(int(s) for s in weight_shape)
        numel = math.prod(self.weight_shape)
        self.register_buffer("codes", torch.zeros(packed_nbytes(numel, scheme), dtype=torch.uint8, device=device))
        self.register_buffer("wp", torch.ones((), dtype=dtype, device=device))
        self.register_buffer("wn", torch.ones((), dtype=dtype, device=device))
        self.register_buffer("shape", torch.tensor(self.weight_shape, dtype=torch.int64, device=device))
        out_features = self.weight_shape[0]
        self.register_buffer("bias", torch.zeros(out_features, dtype=dtype, device=device) if bias else None)
        self.register_buffer("weight", None, persistent=False)
        # Informational, copied from the file's metadata so a re-pack keeps them.
        self.method = self.t = self.sparsity = None

    def decoded_weight(self) -> torch.Tensor:
        """The ternary weight {+Wp, 0, -Wn}; cached when ``decode="once"``."""
        if self.weight is not None:
            return self.weight
        return decode_weight(self.codes, self.weight_shape, self.scheme, self.wp, self.wn)

    @torch.no_grad()
    def finish_load_(self) -> None:
        """Check the loaded buffers, then decode once if asked; raises PackedFileError on bad data."""
        got = tuple(self.shape.tolist())
        if got != self.weight_shape:
            raise PackedFileError(f"stored shape {got} does not match the architecture's {self.weight_shape}")
        for name in ("wp", "wn"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise PackedFileError(f"scale {name}={v} is not a finite non-negative number: the file is corrupt")
        try:
            unpack_codes(self.codes, math.prod(self.weight_shape), self.scheme)
        except ValueError as e:
            raise PackedFileError(str(e)) from e
        self.weight = self.decoded_weight() if self.decode == "once" else None

    @torch.no_grad()
    def ternary_codes(self) -> torch.Tensor:
        """The int8 codes {-1, 0, +1} in the weight's shape."""
        return unpack_codes(self.codes, math.prod(self.weight_shape), self.scheme).view(self.weight_shape)

    @torch.no_grad()
    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Wp, Wn) as stored."""
        return self.wp.detach().clone(), self.wn.detach().clone()

    def extra_repr(self) -> str:
        return f"shape={self.weight_shape}, scheme={self.scheme}, decode={self.decode}, bias={self.bias is not None}"


class PackedTernaryConv2d(_PackedTernary):
    """Inference-only replacement for a ternary ``nn.Conv2d`` that stores packed codes."""

    def __init__(self, conv: nn.Conv2d, scheme: str = "base3", decode: str = "lazy"):
        super().__init__()
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride, self.padding = conv.kernel_size, conv.stride, conv.padding
        self.dilation, self.groups, self.padding_mode = conv.dilation, conv.groups, conv.padding_mode
        self._pad_twice = conv._reversed_padding_repeated_twice
        self._setup_packed(conv.weight.shape, conv.bias is not None, scheme, decode,
                           conv.weight.dtype, conv.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.decoded_weight()
        if self.padding_mode != "zeros":
            x = F.pad(x, self._pad_twice, mode=self.padding_mode)
            return F.conv2d(x, w, self.bias, self.stride, 0, self.dilation, self.groups)
        return F.conv2d(x, w, self.bias, self.stride, self.padding, self.dilation, self.groups)


class PackedTernaryLinear(_PackedTernary):
    """Inference-only replacement for a ternary ``nn.Linear`` that stores packed codes."""

    def __init__(self, linear: nn.Linear, scheme: str = "base3", decode: str = "lazy"):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self._setup_packed(linear.weight.shape, linear.bias is not None, scheme, decode,
                           linear.weight.dtype, linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.decoded_weight(), self.bias)


def ternary_like_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Layers that expose ``ternary_codes()`` and ``scales()``: trainable ternary layers and packed ones."""
    return [(n, m) for n, m in model.named_modules()
            if callable(getattr(m, "ternary_codes", None)) and callable(getattr(m, "scales", None))]


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
                                      "packed files are written by ttq_lib.packed.save_packed / `ttq pack`")
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
                              "load ordinary checkpoints with ttq_lib.checkpoint.load_model")
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
    from .checkpoint import model_meta  # checkpoint builds on this module: import it late

    info = model_meta(model)
    info.update({k: v for k, v in (meta or {}).items() if k not in _RESERVED})
    from .models import DEPTHS

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


def pack_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, scheme: str = "base3") -> Path:
    """Pack a ternary checkpoint (anything ``ttq_lib.checkpoint.load_model`` reads) into ``dst``.

    A full-precision source is refused rather than ternarized on the fly: ternarizing a trained network
    without fine-tuning collapses its accuracy (ResNet-20: 86.5 % -> 7.8 %, see TTQ_NOTES), so such a file
    would look valid and be useless. Ternarize and fine-tune first, then pack the result.
    """
    from .checkpoint import load_model

    check_scheme(scheme)
    model, meta = load_model(src)
    if not ternary_like_layers(model):
        raise ValueError(f"{src} holds a full-precision model (method={meta.get('method')!r}); packing stores "
                         "ternary codes, so ternarize and fine-tune it first (ttq_lib.ternarize_model + training, "
                         "or `ttq train`) and pack that checkpoint")
    return save_packed(model, dst, scheme=scheme, meta=meta)


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
    try:
        tensors = load_file(str(path))
    except SafetensorError as e:
        raise PackedFileError(f"{path} is not a readable safetensors file ({e})") from e
    try:
        meta = {k: json.loads(v) for k, v in raw.items() if k not in _RESERVED}
        names = json.loads(raw.get("ternary_layers", "null"))
    except json.JSONDecodeError as e:
        raise PackedFileError(f"{path} has malformed metadata ({e})") from e
    if not isinstance(names, list) or "arch" not in meta:
        raise PackedFileError(f"{path} lacks the 'ternary_layers' or 'arch' metadata needed to rebuild the model")

    from .models import build_model

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
        kind = {nn.Conv2d: PackedTernaryConv2d, nn.Linear: PackedTernaryLinear}.get(type(template))
        if kind is None:
            raise PackedFileError(f"{path}: layer {name!r} is a {type(template).__name__}, not Conv2d or Linear")
        packed = kind(template, scheme=scheme, decode=decode)
        packed.method, packed.t, packed.sparsity = meta.get("method"), meta.get("t"), meta.get("sparsity")
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child, packed)

    expected = model.state_dict()
    missing = [k for k in expected if k not in tensors]
    unexpected = [k for k in tensors if k not in expected]
    wrong = [k for k in expected if k in tensors and tensors[k].shape != expected[k].shape]
    if missing or unexpected or wrong:
        raise PackedFileError(f"{path} does not fit {meta['arch']}: missing tensor(s) {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {wrong[:5]}")
    # Checked after the structure so that a missing tensor is named rather than reported as corruption.
    if tensor_checksum(tensors) != raw.get("checksum"):
        raise PackedFileError(f"{path} is corrupt: the checksum of its tensors does not match the one stored "
                              "at packing time; copy or pack it again")
    model.load_state_dict(tensors)
    for name in names:
        try:
            model.get_submodule(name).finish_load_()
        except PackedFileError as e:
            raise PackedFileError(f"{path}, layer {name}: {e}") from None
    meta.update(format=raw["format"], format_version=raw["format_version"], scheme=scheme,
                checksum=raw["checksum"])
    return model.eval(), meta
