import pytest
import torch

from ttq_lib import threshold_max, threshold_sparsity, threshold_twn


def test_max_rule():
    w = torch.tensor([0.5, -2.0, 1.0])
    assert threshold_max(w, 0.05).item() == pytest.approx(0.1)
    assert threshold_max(w, 0.5).item() == pytest.approx(1.0)


def test_max_rule_has_no_gradient():
    w = torch.randn(20, requires_grad=True)
    assert not threshold_max(w).requires_grad


@pytest.mark.parametrize("r", [0.0, 0.1, 0.3, 0.5, 0.9])
def test_sparsity_rule_gives_that_share_of_zeros(r):
    w = torch.randn(10_000, generator=torch.Generator().manual_seed(0))
    d = threshold_sparsity(w, r)
    assert (w.abs() <= d).float().mean().item() == pytest.approx(r, abs=1e-4)


def test_sparsity_zero_is_binary():
    w = torch.tensor([0.3, -0.1, 0.2])
    assert threshold_sparsity(w, 0.0).item() == 0.0


def test_twn_rule():
    w = torch.tensor([1.0, -2.0, 3.0, -4.0])
    assert threshold_twn(w).item() == pytest.approx(0.7 * 2.5)
