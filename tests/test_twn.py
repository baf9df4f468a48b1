import pytest
import torch

from ttq_lib import twn_scale, twn_ternarize


def test_twn_forward_hand_worked():
    w = torch.tensor([1.0, -2.0, 0.5, -0.1, 3.0])
    # delta = 0.7 * mean|w| = 0.7 * 1.32 = 0.924; alpha = mean(1, 2, 3) = 2
    q = twn_ternarize(w)
    assert q.tolist() == pytest.approx([2.0, -2.0, 0.0, 0.0, 2.0])
    assert twn_scale(w).item() == pytest.approx(2.0)


def test_twn_gradient_is_straight_through():
    w = torch.randn(30, requires_grad=True)
    g = torch.randn(30)
    twn_ternarize(w).backward(g)
    assert torch.equal(w.grad, g)


def test_twn_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        twn_ternarize(torch.tensor([1.0, float("nan")]))


def test_twn_float_delta_hand_worked():
    w = torch.tensor([1.0, -2.0, 0.5, -0.1, 3.0])
    # delta = 0.4: only -0.1 is zero; alpha = mean(1, 2, 0.5, 3) = 1.625
    assert twn_ternarize(w, delta=0.4).tolist() == pytest.approx([1.625, -1.625, 1.625, 0.0, 1.625])
    # delta = 0.5: 0.5 <= delta is zero too; alpha = mean(1, 2, 3) = 2
    assert twn_ternarize(w, delta=0.5).tolist() == pytest.approx([2.0, -2.0, 0.0, 0.0, 2.0])
    assert twn_ternarize(w, delta=torch.tensor(0.5)).tolist() == pytest.approx([2.0, -2.0, 0.0, 0.0, 2.0])
    # delta = 0: alpha = mean|w| = 6.6 / 5 = 1.32
    assert twn_ternarize(w, delta=0).tolist() == pytest.approx([1.32, -1.32, 1.32, -1.32, 1.32])


@pytest.mark.parametrize("delta,match", [(-0.5, "negative"), (float("nan"), "not finite"),
                                         (float("-inf"), "not finite")])
def test_twn_bad_delta_rejected(delta, match):
    with pytest.raises(ValueError, match=match):
        twn_ternarize(torch.tensor([1.0, -2.0]), delta=delta)


def test_twn_alpha_is_zero_when_every_weight_is_below_the_threshold():
    # the masked mean divides by a count clamped to 1: an all-zero layer gives alpha 0, not 0 / 0 = NaN
    w = torch.tensor([0.1, -0.2, 0.3])
    assert twn_scale(w, delta=0.5).item() == 0.0
    assert twn_ternarize(w, delta=0.5).tolist() == [0.0, 0.0, 0.0]


def test_twn_masked_alpha_matches_the_indexed_mean():
    # alpha is a masked sum over a count (no boolean indexing, so no host sync); it adds the same numbers with
    # zeros between them, so it may differ from |w|[|w| > delta].mean() in the last bits, never more
    from ttq_lib.thresholds import threshold_twn

    g = torch.Generator().manual_seed(0)
    for shape in [(16, 16, 3, 3), (64, 32, 3, 3), (10, 64), (7,)]:
        w = torch.randn(shape, generator=g) * 0.1
        delta = threshold_twn(w)
        indexed = w.abs()[w.abs() > delta].double().mean()
        assert twn_scale(w).double().item() == pytest.approx(indexed.item(), rel=4 * torch.finfo(torch.float32).eps)


def test_twn_layer_makes_a_nan_weight_visible():
    # without per-forward checks a NaN weight must not turn silently into a 0: it gives a NaN output
    from ttq_lib import TernaryLinear

    layer = TernaryLinear(4, 2, method="twn")
    with torch.no_grad():
        layer.weight[0, 1] = float("nan")
    assert torch.isnan(layer(torch.ones(1, 4))).any()
