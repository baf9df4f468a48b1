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
