"""The weight-only baselines of notebook 06 (ttq_lib.baselines), on hand-worked tensors."""
import math

import pytest
import torch

from ttq_lib.baselines import binarize, fake_quantize, int_quantize, int_scales, storage_bits, ttq_no_training


def test_binarize_hand_example():
    w = torch.tensor([[0.5, -1.0], [0.0, 0.1]])
    # mean |w| = (0.5 + 1.0 + 0.0 + 0.1) / 4 = 0.4; the exact zero counts as positive (two values only)
    assert torch.allclose(binarize(w), torch.tensor([[0.4, -0.4], [0.4, 0.4]]))
    assert fake_quantize(w, "binary").unique().numel() == 2


def test_int8_per_channel_hand_example():
    w = torch.tensor([[1.27, -0.5, 0.013], [0.0, 0.0, 0.0], [-2.54, 1.0, 0.331]], dtype=torch.float64)
    # step s_c = max|w_c| / 127: 0.01, 0 (an all-zero channel), 0.02
    assert torch.allclose(int_scales(w, 8), torch.tensor([0.01, 0.0, 0.02], dtype=torch.float64))
    want = torch.tensor([[1.27, -0.50, 0.01], [0.0, 0.0, 0.0], [-2.54, 1.00, 0.34]], dtype=torch.float64)
    q = int_quantize(w, 8)
    assert torch.allclose(q, want, atol=1e-12)
    assert q[1].eq(0).all() and not q.isnan().any()


def test_int4_hand_example():
    w = torch.tensor([[0.7, -0.33, 0.12, 0.04]])
    # qmax = 2^3 - 1 = 7, step 0.1: codes 7, -3, 1, 0
    assert torch.allclose(int_quantize(w, 4), torch.tensor([[0.7, -0.3, 0.1, 0.0]]), atol=1e-6)


@pytest.mark.parametrize("bits", [4, 8])
def test_int_error_at_most_half_a_step_per_channel(bits):
    w = torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(bits), dtype=torch.float64)
    q, s = int_quantize(w, bits), int_scales(w, bits)
    err = (w - q).abs().reshape(32, -1).amax(dim=1)
    assert (err <= s / 2 * (1 + 1e-9)).all()
    # the rounding error really reaches close to half a step somewhere (it is not, say, a quarter)
    assert (err > 0.4 * s).all()
    # at most 2^bits - 1 levels per channel, all multiples of the channel's step, the largest exact
    codes = q.reshape(32, -1) / s[:, None]
    assert torch.allclose(codes, codes.round(), atol=1e-9)
    assert codes.abs().max() <= 2 ** (bits - 1) - 1 + 1e-9
    assert torch.allclose(q.reshape(32, -1).abs().amax(1), w.reshape(32, -1).abs().amax(1))


def test_ternary_rules_without_training_hand_example():
    w = torch.tensor([[0.9, 0.5, 0.01], [-0.02, -0.4, -0.8]])
    # TTQ: delta = 0.05 * 0.9 = 0.045; Wp = mean(0.9, 0.5) = 0.7, Wn = mean(0.4, 0.8) = 0.6
    assert torch.allclose(ttq_no_training(w), torch.tensor([[0.7, 0.7, 0.0], [0.0, -0.6, -0.6]]))
    # TWN: delta = 0.7 * mean|w| = 0.7 * 2.63 / 6 = 0.307; alpha = mean(0.9, 0.5, 0.4, 0.8) = 0.65
    assert torch.allclose(fake_quantize(w, "twn"), torch.tensor([[0.65, 0.65, 0.0], [0.0, -0.65, -0.65]]))
    assert torch.equal(fake_quantize(w, "fp"), w)


def test_storage_bits_by_hand():
    shape = (64, 32, 3, 3)   # 18,432 weights, 64 output channels
    n = 18432
    assert storage_bits("fp", shape) == 32 * n
    assert storage_bits("binary", shape) == n + 32
    assert storage_bits("ttq", shape) == 2 * n + 64
    assert storage_bits("ttq", shape, ternary_bits=1.6) == pytest.approx(1.6 * n + 64)
    assert storage_bits("twn", shape) == 2 * n + 32
    assert storage_bits("int8", shape) == 8 * n + 64 * 32
    assert storage_bits("int4", shape) / n == pytest.approx(4 + 64 * 32 / n)
    assert math.isclose(storage_bits("int3", (10, 64)), 3 * 640 + 320)


def test_bad_inputs_name_the_fix():
    w = torch.randn(4, 4)
    with pytest.raises(ValueError, match="unknown weight scheme 'int1'.*int<k>"):
        fake_quantize(w, "int1")
    with pytest.raises(ValueError, match="unknown weight scheme 'ternary'"):
        storage_bits("ternary", (4, 4))
    with pytest.raises(ValueError, match="bits must be an integer from 2 to 16"):
        int_quantize(w, 17)
    with pytest.raises(ValueError, match="NaN or Inf"):
        binarize(torch.tensor([1.0, float("nan")]))
