"""The TTQ quantizer's forward (Eq. 6) and hand-written backward (Eqs. 7-8) against autograd and
finite differences, hand-worked examples, and bad inputs."""
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from ttq_lib import TTQFunction, ternarize, threshold_max

D = torch.float64  # exact comparisons and gradcheck need double precision


def reference(w, wp, wn, delta):
    """The same function written with differentiable ops; autograd gives the exact dWp, dWn.

    ``w - w.detach() + q.detach()`` style tricks are avoided: the masks are constants, and the latent
    gradient of Eq. 8 is built from the straight-through factors explicitly."""
    pos = (w > delta).to(w.dtype)
    neg = (w < -delta).to(w.dtype)
    zero = 1 - pos - neg
    q_scales = wp * pos - wn * neg
    # value of ste is 0; its gradient wrt w is Wp, 1, Wn on I_p, I_z, I_n (masks and scales detached)
    factor = (wp.detach() * pos + zero + wn.detach() * neg)
    ste = factor * (w - w.detach())
    return q_scales + ste


def make(n=50, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g, dtype=torch.float64).requires_grad_()
    wp = torch.tensor(0.7, dtype=D, requires_grad=True)
    wn = torch.tensor(1.3, dtype=D, requires_grad=True)
    return w, wp, wn


def test_forward_values_hand_worked():
    w = torch.tensor([1.0, 0.5, 0.04, -0.05, -0.06, -1.0])
    # delta = 0.05 * max|w| = 0.05: 0.04 and -0.05 are zero (|w| <= delta), -0.06 is negative
    q = ternarize(w, torch.tensor(2.0), torch.tensor(3.0), t=0.05)
    assert q.tolist() == [2.0, 2.0, 0.0, 0.0, -3.0, -3.0]


def test_backward_hand_worked_including_sign_of_dwn():
    w = torch.tensor([1.0, 0.5, 0.0, -0.5, -1.0], requires_grad=True)
    wp = torch.tensor(2.0, requires_grad=True)
    wn = torch.tensor(3.0, requires_grad=True)
    q = ternarize(w, wp, wn, t=0.05)
    g = torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5])
    q.backward(g)
    assert wp.grad.item() == pytest.approx(0.1 + 0.2)
    # q = -Wn on I_n, so dL/dWn = -(0.4 + 0.5): the minus the paper's Eq. 7 leaves out
    assert wn.grad.item() == pytest.approx(-0.9)
    assert w.grad.tolist() == pytest.approx([2.0 * 0.1, 2.0 * 0.2, 1.0 * 0.3, 3.0 * 0.4, 3.0 * 0.5])


def test_gradient_descent_on_wn_moves_the_right_way():
    # Target -2 on the negative region, Wn starts at 1: loss shrinks only if Wn grows.
    w = torch.tensor([-1.0, -0.8])
    wn = torch.tensor(1.0, requires_grad=True)
    loss = ((ternarize(w, torch.tensor(1.0), wn) - torch.tensor([-2.0, -2.0])) ** 2).sum()
    loss.backward()
    assert wn.grad.item() < 0  # so wn - lr * grad increases
    assert wn.grad.item() == pytest.approx(-4.0)


@pytest.mark.parametrize("seed", range(5))
def test_gradients_match_autograd_reference(seed):
    w, wp, wn = make(seed=seed)
    delta = threshold_max(w, 0.3)
    g = torch.randn(w.shape, generator=torch.Generator().manual_seed(100 + seed), dtype=D)
    q = TTQFunction.apply(w, wp, wn, delta)
    ours = torch.autograd.grad(q, (w, wp, wn), g)
    r = reference(w, wp, wn, delta)
    assert torch.equal(q, r)
    ref = torch.autograd.grad(r, (w, wp, wn), g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_scale_gradients_match_finite_differences(seed):
    w, wp, wn = make(seed=seed)
    target = torch.randn(w.shape, generator=torch.Generator().manual_seed(7 + seed), dtype=D)

    def loss(wp_, wn_):
        return ((ternarize(w.detach(), wp_, wn_, t=0.2) - target) ** 2).sum()

    loss(wp, wn).backward()
    eps = 1e-6
    with torch.no_grad():
        d_wp = (loss(wp + eps, wn) - loss(wp - eps, wn)) / (2 * eps)
        d_wn = (loss(wp, wn + eps) - loss(wp, wn - eps)) / (2 * eps)
    assert wp.grad.item() == pytest.approx(d_wp.item(), rel=1e-6)
    assert wn.grad.item() == pytest.approx(d_wn.item(), rel=1e-6)
    assert wn.grad.item() != pytest.approx(-d_wn.item(), rel=1e-3)  # the unsigned formula would be wrong


def test_gradcheck_in_scale_directions():
    w, wp, wn = make(seed=3)
    delta = threshold_max(w, 0.1)
    fn = lambda a, b: TTQFunction.apply(w.detach(), a, b, delta)
    assert torch.autograd.gradcheck(fn, (wp, wn))


def test_threshold_is_constant_for_gradient():
    # moving the max weight changes delta, but the latent gradient is only the scaled STE (Eq. 8)
    w = torch.tensor([2.0, 0.05, -0.3], requires_grad=True)
    q = ternarize(w, torch.tensor(1.5), torch.tensor(0.5), t=0.05)
    q.sum().backward()
    assert w.grad.tolist() == pytest.approx([1.5, 1.0, 0.5])


def test_sparsity_rule_through_keyword():
    w = torch.linspace(-1, 1, 101)
    q = ternarize(w, torch.tensor(1.0), torch.tensor(1.0), sparsity=0.4)
    assert (q == 0).float().mean().item() == pytest.approx(0.4, abs=0.011)


@pytest.mark.parametrize("t", [0.0, 1.0, -0.1, 1.5, float("nan")])
def test_t_outside_unit_interval_rejected(t):
    with pytest.raises(ValueError, match=r"t=.*outside \(0, 1\)"):
        ternarize(torch.randn(10), torch.tensor(1.0), torch.tensor(1.0), t=t)


@pytest.mark.parametrize("r", [1.0, -0.01, 2.0])
def test_sparsity_outside_range_rejected(r):
    with pytest.raises(ValueError, match=r"sparsity r=.*outside \[0, 1\)"):
        ternarize(torch.randn(10), torch.tensor(1.0), torch.tensor(1.0), sparsity=r)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_weights_rejected(bad):
    w = torch.randn(10)
    w[3] = bad
    with pytest.raises(ValueError, match="NaN or Inf"):
        ternarize(w, torch.tensor(1.0), torch.tensor(1.0))


def test_empty_weight_rejected():
    with pytest.raises(ValueError, match="empty"):
        ternarize(torch.empty(0, 3), torch.tensor(1.0), torch.tensor(1.0))


@pytest.mark.parametrize("wp,wn,name", [(0.0, 1.0, "wp"), (1.0, -0.5, "wn"), (float("nan"), 1.0, "wp")])
def test_non_positive_scales_rejected(wp, wn, name):
    with pytest.raises(ValueError, match=f"{name}=.*not positive"):
        ternarize(torch.randn(10), torch.tensor(wp), torch.tensor(wn))


@given(st.lists(st.floats(-4, 4, allow_nan=False, width=32), min_size=1, max_size=60),
       st.floats(0, 3), st.floats(0.01, 5), st.floats(0.01, 5))
def test_codes_scales_and_shares_agree_with_numpy(values, delta, wp, wn):
    from ttq_lib.quantizers import code_shares, scale_codes, ternary_codes

    w = torch.tensor(values, dtype=torch.float32)
    a = np.asarray(values, dtype=np.float32)
    codes = ternary_codes(w, delta)
    assert codes.dtype == torch.int8
    assert codes.tolist() == (np.sign(a) * (np.abs(a) > np.float32(delta))).astype(int).tolist()
    q = scale_codes(codes, torch.tensor(wp), torch.tensor(wn))
    want = np.where(a > np.float32(delta), np.float32(wp), np.where(a < -np.float32(delta), -np.float32(wn), 0))
    assert q.tolist() == want.tolist()
    shares = code_shares(codes)
    assert (shares["neg"], shares["pos"]) == (np.mean(a < -np.float32(delta)), np.mean(a > np.float32(delta)))
    assert sum(shares.values()) == pytest.approx(1.0)


def test_float_delta_hand_worked():
    w = torch.tensor([1.0, 0.5, 0.04, -0.05, -0.06, -1.0], requires_grad=True)
    wp, wn = torch.tensor(2.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)
    # delta = 0.5: only 1.0 is in I_p (0.5 <= delta is zero), only -1.0 in I_n
    q = ternarize(w, wp, wn, delta=0.5)
    assert q.tolist() == [2.0, 0.0, 0.0, 0.0, 0.0, -3.0]
    q.backward(torch.tensor([0.1, 0.2, 0.3, 0.4, 0.5, 0.6]))
    assert wp.grad.item() == pytest.approx(0.1)
    assert wn.grad.item() == pytest.approx(-0.6)
    assert w.grad.tolist() == pytest.approx([0.2, 0.2, 0.3, 0.4, 0.5, 1.8])
    # delta = 0 (a binary layer): every non-zero weight takes a scale
    assert ternarize(w, wp, wn, delta=0).tolist() == [2.0, 2.0, 2.0, -3.0, -3.0, -3.0]
    # a 0-dim tensor gives the same as the Python number
    assert ternarize(w, wp, wn, delta=torch.tensor(0.05)).tolist() == [2.0, 2.0, 0.0, 0.0, -3.0, -3.0]
    assert ternarize(w, wp, wn, delta=0.05).tolist() == [2.0, 2.0, 0.0, 0.0, -3.0, -3.0]


@pytest.mark.parametrize("delta,match", [(-0.1, "delta=-0.1 is negative.*abs"), (float("nan"), "not finite"),
                                         (float("inf"), "not finite"), (torch.tensor(-1.0), "negative"),
                                         (torch.tensor([0.1, 0.2]), "single number")])
def test_bad_delta_rejected(delta, match):
    with pytest.raises(ValueError, match=match):
        ternarize(torch.randn(10), torch.tensor(1.0), torch.tensor(1.0), delta=delta)


def test_delta_of_wrong_type_rejected():
    with pytest.raises(TypeError, match="delta must be a Python number or a 0-dim tensor, got str"):
        ternarize(torch.randn(10), torch.tensor(1.0), torch.tensor(1.0), delta="0.1")


# The ternary layers skip the per-call checks above in their forward pass (each one reads a value back: a
# host-device sync on a GPU, a graph break under torch.compile) and check where weights and scales enter.

@pytest.fixture()
def checks_off():
    from ttq_lib.quantizers import set_checks

    previous = set_checks(False)
    yield set_checks
    set_checks(previous)


@pytest.mark.parametrize("method,rule", [("ttq", {}), ("ttq", {"t": 0.2}), ("ttq", {"sparsity": 0.4}),
                                         ("twn", {}), ("twn", {"sparsity": 0.3})])
def test_layer_forward_is_the_checked_function_bit_for_bit(method, rule, checks_off):
    from ttq_lib import TernaryConv2d, threshold, twn_ternarize

    torch.manual_seed(0)
    layer = TernaryConv2d(8, 16, 3, method=method, scale_init="mean", **rule)
    w = layer.weight
    if method == "ttq":
        want = ternarize(w, layer.wp, layer.wn, layer.t, sparsity=layer.sparsity)
    else:
        want = twn_ternarize(w, threshold(w, None, rule["sparsity"]) if rule else None)
    assert torch.equal(layer.quantized_weight(), want)


def test_layer_checks_where_values_enter_not_in_every_forward(checks_off):
    from ttq_lib import TernaryConv2d, clamp_scales_, ternarize_model
    from ttq_lib.models import resnet20

    layer = TernaryConv2d(2, 3, 3)
    holder = torch.nn.ModuleDict({"conv": layer})
    good = {k: v.clone() for k, v in holder.state_dict().items()}
    # loading: a NaN latent weight or a scale <= 0 is refused, naming the tensor, and nothing is loaded
    bad_weight = good["conv.weight"].clone()
    bad_weight[1, 0, 2, 2] = float("nan")
    with pytest.raises(ValueError, match=r"conv\.weight holds 1 NaN or Inf"):
        holder.load_state_dict({**good, "conv.weight": bad_weight})
    with pytest.raises(ValueError, match=r"conv\.wn=-0\.5 is not positive"):
        holder.load_state_dict({**good, "conv.wn": torch.tensor(-0.5)})
    assert torch.equal(layer.weight, good["conv.weight"]) and layer.wn.item() == 1.0
    # conversion: a model whose weights hold an Inf is refused when it is ternarized
    model = resnet20()
    with torch.no_grad():
        model.layer1[0].conv1.weight[0, 0, 0, 0] = float("inf")
    with pytest.raises(ValueError, match="NaN or Inf"):
        ternarize_model(model)
    # the forward pass does not check (no sync): a NaN weight set by hand goes through as NaN ...
    with torch.no_grad():
        layer.weight[0, 0, 0, 0] = float("nan")
    x = torch.randn(1, 2, 5, 5)
    assert torch.isnan(layer(x)).any()
    clamp_scales_(layer)  # ... and nor does the clamp, unless asked
    with pytest.raises(ValueError, match="NaN or Inf"):
        clamp_scales_(layer, check=True)
    # the debug switch brings the check back into every forward pass and every clamp
    checks_off(True)
    with pytest.raises(ValueError, match="NaN or Inf"):
        layer(x)
    with pytest.raises(ValueError, match="NaN or Inf"):
        clamp_scales_(layer)


def test_clamp_keeps_scales_positive_without_reading_them(checks_off):
    from ttq_lib import TernaryLinear, clamp_scales_

    layer = TernaryLinear(4, 3)
    with torch.no_grad():
        layer.wp.fill_(-2.0)
        layer.wn.fill_(0.5)
    clamp_scales_(layer, eps=1e-3)
    assert (layer.wp.item(), layer.wn.item()) == (pytest.approx(1e-3), 0.5)


@pytest.mark.parametrize("value,expected", [("1", True), ("true", True), ("0", False), ("", False)])
def test_checks_switch_from_the_environment(value, expected):
    import subprocess
    import sys

    code = "from ttq_lib.quantizers import checks_enabled; print(checks_enabled())"
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "TTQ_CHECKS": value},
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(expected)


def test_unknown_checks_setting_is_a_clear_error():
    import os
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", "import ttq_lib.quantizers"], capture_output=True, text=True,
                         env={**os.environ, "TTQ_CHECKS": "maybe"})
    assert out.returncode != 0
    assert "TTQ_CHECKS='maybe' is not understood: set TTQ_CHECKS=1" in out.stderr
