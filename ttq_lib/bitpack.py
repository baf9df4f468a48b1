"""Bit packing of ternary codes {-1, 0, +1}.

TTQ (Zhu et al., ICLR 2017, Sec. 1 and Sec. 5) notes that at inference a ternary layer only needs its
codes plus two scalars ``Wp``/``Wn``: "nearly 16x smaller" than fp32 when each code takes 2 bits.
This module provides two lossless layouts for the codes:

``"2bit"``
    Four codes per byte, 2 bits each (the paper's assumption; the same density as bitnet.cpp's I2_S).
    Code ``i`` is stored as the digit ``d = code + 1`` in bits ``2*(i % 4) .. 2*(i % 4) + 1`` of byte
    ``i // 4`` (little-endian inside the byte). The bit pattern ``0b11`` never occurs in valid data.

``"base3"``
    Five codes per byte: ``byte = sum_k d_k * 3**k`` with ``d = code + 1``. Since ``3**5 = 243 <= 256``
    this costs 8/5 = 1.6 bits per weight, close to the log2(3) = 1.585 bits limit for uniform trits.
    Bytes above 242 never occur in valid data.

In both layouts the tail of the last byte is padded with digit 0, i.e. all-zero bits, so packing is
deterministic. Everything is vectorised over the elements; only the 4 or 5 digit positions are looped.
"""

from __future__ import annotations

import math

import torch

__all__ = [
    "SCHEMES",
    "CODES_PER_BYTE",
    "check_scheme",
    "packed_nbytes",
    "pack_2bit",
    "unpack_2bit",
    "pack_base3",
    "unpack_base3",
    "pack_codes",
    "unpack_codes",
    "digit_table",
]

#: Codes stored per byte for each packing scheme.
CODES_PER_BYTE = {"2bit": 4, "base3": 5}
SCHEMES = tuple(CODES_PER_BYTE)

# Largest valid base-3 byte: all five digits equal 2, i.e. 3**5 - 1.
_MAX_BASE3_BYTE = 3**5 - 1
_POW3 = (1, 3, 9, 27, 81)


def check_scheme(scheme: str) -> str:
    """Return ``scheme`` if it is known, else raise a ValueError listing the choices."""
    if scheme not in CODES_PER_BYTE:
        raise ValueError(f"unknown packing scheme {scheme!r}; choose one of {', '.join(map(repr, SCHEMES))}")
    return scheme


def packed_nbytes(numel: int, scheme: str) -> int:
    """Bytes needed to pack ``numel`` ternary codes with ``scheme`` (``ceil(numel / codes_per_byte)``)."""
    check_scheme(scheme)
    if isinstance(numel, bool) or not isinstance(numel, int) or numel < 0:
        raise ValueError(f"numel must be a non-negative int, got {numel!r}")
    return math.ceil(numel / CODES_PER_BYTE[scheme])


def _digits(codes: torch.Tensor, per_byte: int) -> torch.Tensor:
    """Validate ``codes`` and return digits ``code + 1`` as uint8, shaped ``(nbytes, per_byte)``."""
    if not isinstance(codes, torch.Tensor):
        raise ValueError(f"codes must be a torch.Tensor, got {type(codes).__name__}")
    if codes.dtype.is_floating_point or codes.dtype.is_complex or codes.dtype == torch.bool:
        # Floats are refused rather than rounded: a float here usually means the *quantized weight*
        # (values +-Wp, +-Wn) was passed instead of its codes.
        raise ValueError(
            f"codes must be an integer tensor with values in {{-1, 0, 1}}, got dtype {codes.dtype}; "
            "use layer.ternary_codes() or convert with .to(torch.int8)"
        )
    flat = codes.detach().reshape(-1)
    if flat.numel() and bool(((flat < -1) | (flat > 1)).any()):
        bad = flat[(flat < -1) | (flat > 1)][:5].tolist()
        raise ValueError(f"codes must only contain -1, 0 or 1; found values such as {bad}")
    digits = (flat.to(torch.int16) + 1).to(torch.uint8)
    pad = (-digits.numel()) % per_byte
    if pad:
        digits = torch.cat([digits, digits.new_zeros(pad)])
    return digits.view(-1, per_byte)


def _check_packed(packed: torch.Tensor, numel: int, scheme: str) -> torch.Tensor:
    """Validate a packed byte tensor against ``numel`` and return it flattened."""
    expected = packed_nbytes(numel, scheme)
    if not isinstance(packed, torch.Tensor) or packed.dtype != torch.uint8:
        got = packed.dtype if isinstance(packed, torch.Tensor) else type(packed).__name__
        raise ValueError(f"packed data must be a torch.uint8 tensor, got {got}")
    flat = packed.reshape(-1)
    if flat.numel() != expected:
        raise ValueError(
            f"{scheme} data for {numel} codes must be {expected} bytes, got {flat.numel()}; "
            "the data is truncated or belongs to another tensor"
        )
    return flat


def pack_2bit(codes: torch.Tensor) -> torch.Tensor:
    """Pack ternary ``codes`` of any shape into a 1-D uint8 tensor, 4 codes per byte."""
    d = _digits(codes, 4)
    out = d[:, 0].clone()
    for k in range(1, 4):
        out |= d[:, k] << (2 * k)
    return out


def unpack_2bit(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_2bit`: 1-D int8 tensor of ``numel`` codes in {-1, 0, 1}."""
    flat = _check_packed(packed, numel, "2bit")
    # A field equals 0b11 exactly when its high and low bit are both set; test all four at once.
    if flat.numel() and bool((flat & (flat >> 1) & 0x55).any()):
        raise ValueError("corrupt 2bit data: found the bit pattern 0b11, which no ternary code produces")
    digits = digit_table("2bit", flat.device).index_select(0, flat.int()).reshape(-1)[:numel]
    return digits.to(torch.int8) - 1


def pack_base3(codes: torch.Tensor) -> torch.Tensor:
    """Pack ternary ``codes`` of any shape into a 1-D uint8 tensor, 5 trits per byte (1.6 bits each)."""
    d = _digits(codes, 5)
    # Horner form keeps every intermediate <= 242, so uint8 arithmetic never overflows.
    out = d[:, 4].clone()
    for k in range(3, -1, -1):
        out = out * 3 + d[:, k]
    return out


def unpack_base3(packed: torch.Tensor, numel: int) -> torch.Tensor:
    """Inverse of :func:`pack_base3`: 1-D int8 tensor of ``numel`` codes in {-1, 0, 1}."""
    flat = _check_packed(packed, numel, "base3")
    if flat.numel() and bool((flat > _MAX_BASE3_BYTE).any()):
        raise ValueError(
            f"corrupt base3 data: a byte exceeds {_MAX_BASE3_BYTE} (3**5 - 1), which five trits cannot produce"
        )
    digits = digit_table("base3", flat.device).index_select(0, flat.int()).reshape(-1)[:numel]
    return digits.to(torch.int8) - 1


def pack_codes(codes: torch.Tensor, scheme: str) -> torch.Tensor:
    """Pack with the named ``scheme`` ("2bit" or "base3")."""
    return {"2bit": pack_2bit, "base3": pack_base3}[check_scheme(scheme)](codes)


def unpack_codes(packed: torch.Tensor, numel: int, scheme: str) -> torch.Tensor:
    """Unpack with the named ``scheme`` ("2bit" or "base3")."""
    return {"2bit": unpack_2bit, "base3": unpack_base3}[check_scheme(scheme)](packed, numel)


_TABLES: dict[tuple[str, str, torch.dtype], torch.Tensor] = {}


def digit_table(scheme: str, device: torch.device | str = "cpu", dtype: torch.dtype = torch.uint8) -> torch.Tensor:
    """Lookup table ``(256, codes_per_byte)`` of digits ``code + 1`` for every byte value, in ``dtype``.

    Decoding by table lookup is one gather per byte instead of 4-5 shift/divide passes, which is
    what makes decoding inside ``forward`` (packed inference) cheap; an integer ``dtype`` gives a table
    usable directly as an index. Bytes that no valid packing
    produces (a 0b11 field, or a base-3 byte above 242) decode to the out-of-range digit 3.
    """
    check_scheme(scheme)
    key = (scheme, str(torch.device(device)), dtype)
    table = _TABLES.get(key)
    if table is None:
        byte = torch.arange(256, dtype=torch.int16)
        if scheme == "2bit":
            cols = [(byte >> (2 * k)) & 3 for k in range(4)]
        else:
            cols = [(byte // p) % 3 for p in _POW3]
            cols = [torch.where(byte > _MAX_BASE3_BYTE, 3, c) for c in cols]
        table = torch.stack(cols, dim=1).to(dtype=dtype, device=device)
        _TABLES[key] = table
    return table
