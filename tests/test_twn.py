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
