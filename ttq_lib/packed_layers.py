"""Inference-only ternary layers that keep their weights packed: codes {-1, 0, +1} plus Wp, Wn.

TTQ (Zhu et al., ICLR 2017, Sec. 1 and Sec. 5): at inference a ternary layer needs only its codes and the two
scales, "nearly 16x smaller" than fp32 at 2 bits per weight; :mod:`ttq_lib.bitpack` stores 4 (2-bit) or 5
(base-3) codes per byte.  These layers hold those bytes as buffers and decode them to {+Wp, 0, -Wn} (Eq. 6)
by one table lookup.  Reading and writing packed files is :mod:`ttq_lib.formats.packed_file`'s job.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .bitpack import CODES_PER_BYTE, check_scheme, digit_table, packed_nbytes, unpack_codes

DECODE_MODES = ("lazy", "once")



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
    packed models can be measured (:mod:`ttq_lib.formats.size`) and re-packed with another scheme.
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
        """Check the loaded buffers, then decode once if asked; raises ValueError on bad data."""
        got = tuple(self.shape.tolist())
        if got != self.weight_shape:
            raise ValueError(f"stored shape {got} does not match the architecture's {self.weight_shape}")
        for name in ("wp", "wn"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"scale {name}={v} is not a finite non-negative number: the file is corrupt")
        unpack_codes(self.codes, math.prod(self.weight_shape), self.scheme)  # raises on corrupt codes
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


def packed_layer_for(layer: nn.Module, scheme: str = "base3", decode: str = "lazy") -> nn.Module:
    """An empty packed layer shaped like ``layer`` (an ``nn.Conv2d`` or ``nn.Linear``, ternary or not)."""
    if isinstance(layer, nn.Conv2d):
        return PackedTernaryConv2d(layer, scheme=scheme, decode=decode)
    if isinstance(layer, nn.Linear):
        return PackedTernaryLinear(layer, scheme=scheme, decode=decode)
    raise ValueError(f"a {type(layer).__name__} cannot be packed: only Conv2d and Linear layers are ternary")
