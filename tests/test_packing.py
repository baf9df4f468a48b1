"""Bit packing of ternary codes: exact round trips, layout, and input validation."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ttq_lib.bitpack import (
    SCHEMES,
    pack_2bit,
    pack_base3,
    pack_codes,
    packed_nbytes,
    unpack_2bit,
    unpack_base3,
    unpack_codes,
)

# Shapes of 0 to 3 dims with small sides: covers empty, one element, and lengths not divisible by 4 or 5.
shapes = st.lists(st.integers(0, 13), min_size=0, max_size=3).map(tuple)


@st.composite
def code_tensors(draw):
    shape = draw(shapes)
    seed = draw(st.integers(0, 2**31 - 1))
    dtype = draw(st.sampled_from([torch.int8, torch.int16, torch.int32, torch.int64]))
    g = torch.Generator().manual_seed(seed)
    return torch.randint(-1, 2, shape, generator=g).to(dtype)


@settings(max_examples=200, deadline=None)
@given(codes=code_tensors(), scheme=st.sampled_from(SCHEMES))
def test_round_trip_any_shape(codes, scheme):
    packed = pack_codes(codes, scheme)
    assert packed.dtype == torch.uint8 and packed.dim() == 1
    assert packed.numel() == packed_nbytes(codes.numel(), scheme)
    out = unpack_codes(packed, codes.numel(), scheme)
    assert out.dtype == torch.int8 and out.dim() == 1
    assert torch.equal(out, codes.reshape(-1).to(torch.int8))


@settings(max_examples=100, deadline=None)
@given(n=st.integers(0, 4000))
def test_packed_nbytes_is_ceil(n):
    assert packed_nbytes(n, "2bit") == math.ceil(n / 4)
    assert packed_nbytes(n, "base3") == math.ceil(n / 5)


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 6, 9, 10, 11, 1001])
def test_round_trip_lengths(n):
    codes = torch.randint(-1, 2, (n,), dtype=torch.int8)
    assert torch.equal(unpack_2bit(pack_2bit(codes), n), codes)
    assert torch.equal(unpack_base3(pack_base3(codes), n), codes)


def test_layout_is_documented_one():
    # 2bit: digit code+1 at bits 2*i, little-endian in the byte; tail padded with zero bits.
    assert pack_2bit(torch.tensor([1, 1, 1, 1])).tolist() == [0b10101010]
    assert pack_2bit(torch.tensor([-1, 0, 1, 0, 1])).tolist() == [0b01100100, 0b10]
    # base3: byte = sum d_k 3^k with d = code + 1.
    assert pack_base3(torch.tensor([1, 1, 1, 1, 1])).tolist() == [242]
    assert pack_base3(torch.tensor([-1, -1, -1, -1, -1])).tolist() == [0]
    assert pack_base3(torch.tensor([0, 1, -1, 0, 0, 1])).tolist() == [1 + 2 * 3 + 0 + 27 + 81, 2]


def test_all_243_base3_bytes_decode_and_reencode():
    packed = torch.arange(243, dtype=torch.uint8)
    codes = unpack_base3(packed, 243 * 5)
    assert torch.equal(pack_base3(codes), packed)


@pytest.mark.parametrize("pack", [pack_2bit, pack_base3])
@pytest.mark.parametrize("bad", [torch.tensor([0, 2, 1]), torch.tensor([-2]), torch.tensor([0.0, 1.0]),
                                 torch.tensor([True, False]), [0, 1]])
def test_invalid_codes_rejected(pack, bad):
    with pytest.raises(ValueError, match="codes"):
        pack(bad)


def test_float_codes_message_names_the_fix():
    with pytest.raises(ValueError, match="ternary_codes"):
        pack_base3(torch.tensor([0.5, -0.5]))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unpack_checks_length(scheme):
    packed = pack_codes(torch.zeros(11, dtype=torch.int8), scheme)
    with pytest.raises(ValueError, match="bytes"):
        unpack_codes(packed[:-1], 11, scheme)
    with pytest.raises(ValueError, match="bytes"):
        unpack_codes(torch.cat([packed, packed[:1]]), 11, scheme)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_unpack_requires_uint8(scheme):
    with pytest.raises(ValueError, match="uint8"):
        unpack_codes(torch.zeros(3, dtype=torch.int8), 11, scheme)


def test_corrupt_base3_byte_rejected():
    for byte in (243, 255):
        with pytest.raises(ValueError, match="corrupt"):
            unpack_base3(torch.tensor([0, byte], dtype=torch.uint8), 10)


def test_corrupt_2bit_field_rejected():
    with pytest.raises(ValueError, match="corrupt"):
        unpack_2bit(torch.tensor([0b00110000], dtype=torch.uint8), 4)


def test_unknown_scheme_and_bad_numel():
    with pytest.raises(ValueError, match="unknown packing scheme"):
        packed_nbytes(10, "3bit")
    with pytest.raises(ValueError, match="unknown packing scheme"):
        pack_codes(torch.zeros(3, dtype=torch.int8), "zip")
    with pytest.raises(ValueError, match="non-negative"):
        packed_nbytes(-1, "2bit")
