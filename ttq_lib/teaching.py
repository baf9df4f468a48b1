"""The computations the lessons show: threshold statistics (notebook 01) and gradient aids (notebook 02).

Notation of the paper (Sec. 3): latent weights ``w``, threshold ``delta``, regions
I_p = {w > delta}, I_z = {|w| <= delta}, I_n = {w < -delta}, ternary weights ``q`` = +Wp / 0 / -Wn (Eq. 6),
gradients Eqs. 7-8 (see :mod:`ttq_lib.quantizers`).

* Threshold statistics: the shares of the three regions, the least-squares scales (:func:`region_means`,
  from :mod:`ttq_lib.quantizers`), the relative error of a ternary approximation, sweeps over the threshold
  factor ``t`` and the threshold rules side by side.
* Gradient aids: an autograd-only reference of the TTQ quantizer, the quantizer with the wrong sign of
  ``dL/dWn`` (Eq. 7 as printed), finite differences, and a toy problem in which Wp and Wn learn.
* :func:`check_exercise`: compares a student's answer with ttq_lib's.
"""
from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import torch

from .quantizers import TTQFunction, _check_scale, region_means, ternarize
from .thresholds import DEFAULT_T, check_weight, threshold_max, threshold_sparsity, threshold_twn

__all__ = ["region_shares", "region_means", "ternary_approximation", "ternary_error", "threshold_sweep",
           "rule_summary", "ttq_autograd_reference", "WrongSignTTQFunction", "ternarize_wrong_sign",
           "finite_difference", "toy_target", "fit_ternary_toy", "quantizer_gradients", "ttq_gradients",
           "check_exercise"]


# ----- threshold statistics (notebook 01) -----------------------------------------------------------

@torch.no_grad()
def region_shares(w: torch.Tensor, delta: torch.Tensor | float) -> dict[str, float]:
    """Shares of the weights in I_n = {w < -delta}, I_z = {|w| <= delta}, I_p = {w > delta} (sum to 1)."""
    check_weight(w)
    d = float(delta)
    n = w.numel()
    neg, pos = int((w < -d).sum()), int((w > d).sum())
    return {"neg": neg / n, "zero": (n - neg - pos) / n, "pos": pos / n}


@torch.no_grad()
def ternary_approximation(w: torch.Tensor, delta: torch.Tensor | float, wp: float, wn: float) -> torch.Tensor:
    """The ternary tensor ``+wp`` on I_p, 0 on I_z, ``-wn`` on I_n (Eq. 6) for any scales, even 0."""
    d = float(delta)
    return torch.where(w > d, torch.full_like(w, wp), torch.where(w < -d, torch.full_like(w, -wn),
                                                                  torch.zeros_like(w)))


@torch.no_grad()
def ternary_error(w: torch.Tensor, delta: torch.Tensor | float, wp: float | None = None,
                  wn: float | None = None) -> float:
    """Relative L2 error ``||w - q||_2 / ||w||_2`` of the ternary approximation q of ``w``.

    ``wp``/``wn`` default to :func:`region_means`, the best scales for these regions, so the result is
    the error of the best ternary approximation with this threshold.  TWN uses one scale for both signs:
    pass ``wp = wn = alpha``.
    """
    check_weight(w)
    w = w.detach().double()
    best_p, best_n = region_means(w, delta)
    q = ternary_approximation(w, delta, best_p if wp is None else wp, best_n if wn is None else wn)
    norm = float(w.norm())
    return float((w - q).norm()) / norm if norm > 0 else 0.0


@torch.no_grad()
def threshold_sweep(w: torch.Tensor, ts: Iterable[float] | None = None) -> dict[str, list[float]]:
    """For each t: the threshold ``t * max|w|``, the zero share and the best ternary error.

    Every threshold, whatever rule picked it, lands somewhere on this curve: the rules differ only in
    which point each layer gets.
    """
    ts = [float(t) for t in (torch.linspace(0.005, 0.6, 120).tolist() if ts is None else ts)]
    out = {"t": ts, "threshold": [], "zero": [], "error": []}
    for t in ts:
        d = threshold_max(w, t)
        out["threshold"].append(float(d))
        out["zero"].append(region_shares(w, d)["zero"])
        out["error"].append(ternary_error(w, d))
    return out


def rule_summary(w: torch.Tensor, t: float = DEFAULT_T, sparsities: Sequence[float] = (0.0, 0.3, 0.5)) -> list[dict]:
    """The threshold rules side by side on one weight tensor: TTQ's ``t * max|w|``, TWN's ``0.7 * mean|w|``
    and fixed sparsities; per rule the threshold, its value as a multiple of max|w|, the shares, the
    least-squares scales and the relative error."""
    check_weight(w)
    rules = [(f"TTQ  t={t:g}", threshold_max(w, t)), ("TWN  0.7·mean|w|", threshold_twn(w))]
    rules += [(f"sparsity r={r:g}", threshold_sparsity(w, r)) for r in sparsities]
    wmax = float(w.detach().abs().max())
    rows = []
    for name, d in rules:
        wp, wn = region_means(w, d)
        rows.append({"rule": name, "threshold": float(d), "t_equiv": float(d) / wmax, **region_shares(w, d),
                     "wp": wp, "wn": wn, "error": ternary_error(w, d)})
    return rows


# ----- gradient aids (notebook 02) ------------------------------------------------------------------


def ttq_autograd_reference(w: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The TTQ quantizer written with ordinary differentiable operations, so autograd derives its backward.

    ``q = Wp * P - Wn * N`` with the masks P = [w > delta], N = [w < -delta] held constant gives
    dL/dWp = sum_{I_p} g and dL/dWn = -sum_{I_n} g by the chain rule.  For the latent weights the term
    ``s*w - (s*w).detach()`` (zero in value) passes the gradient ``s * g`` with s = Wp, 1, Wn on
    I_p, I_z, I_n: the scaled straight-through estimator of Eq. 8.
    """
    d = delta.detach()
    p = (w > d).to(w.dtype)
    n = (w < -d).to(w.dtype)
    q = wp * p - wn * n
    s = (wp * p + wn * n + (1 - p - n)).detach()
    sw = s * w
    return q + (sw - sw.detach())


class WrongSignTTQFunction(TTQFunction):
    """TTQ with ``dL/dWn = +sum_{I_n} g``: the paper's Eq. 7 read literally, as one popular port did.

    For teaching only (notebook 02): gradient descent then pushes Wn away from its best value.
    """

    @staticmethod
    def backward(ctx, g):
        grad_w, grad_wp, grad_wn, none = TTQFunction.backward(ctx, g)
        return grad_w, grad_wp, (None if grad_wn is None else -grad_wn), none


def ternarize_wrong_sign(w: torch.Tensor, wp: torch.Tensor, wn: torch.Tensor, t: float = DEFAULT_T) -> torch.Tensor:
    """Like :func:`ttq_lib.ternarize` (threshold ``t * max|w|``) but with the wrong sign of dL/dWn."""
    check_weight(w)
    return WrongSignTTQFunction.apply(w, _check_scale(wp, "wp"), _check_scale(wn, "wn"), threshold_max(w, t))


@torch.no_grad()
def finite_difference(f: Callable[[], torch.Tensor], x: torch.Tensor, index: int | tuple | None = None,
                      eps: float = 1e-4) -> float:
    """Central difference ``(f(x + eps) - f(x - eps)) / (2 eps)`` of a scalar function of ``x``
    (or of one element ``x[index]``); ``x`` is changed in place and restored."""
    view = x if index is None else x[index]
    old = view.clone()
    view.copy_(old + eps)
    up = float(f())
    view.copy_(old - eps)
    down = float(f())
    view.copy_(old)
    return (up - down) / (2 * eps)


def toy_target(n: int = 1000, wp: float = 1.5, wn: float = 0.5, t: float = DEFAULT_T, noise: float = 0.1,
               seed: int = 0, correlation: float | None = None) -> dict[str, torch.Tensor]:
    """A toy problem for notebook 02: latent weights ``w`` and a ternary target ``y`` (+ Gaussian noise).

    The target is ``+wp`` / 0 / ``-wn``.  By default its codes are w's own regions at threshold
    ``t * max|w|``, so only the scales have to be learned.  With ``correlation=rho`` the codes come from
    ``s = rho * w + sqrt(1 - rho^2) * z`` (z independent noise) thresholded at ±0.5, so the assignments
    have to be learned too.  Returns w, y and the target codes.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, generator=g)
    if correlation is not None:
        if not -1.0 <= correlation <= 1.0:
            raise ValueError(f"correlation={correlation} is outside [-1, 1]")
        s = correlation * w + math.sqrt(1 - correlation ** 2) * torch.randn(n, generator=g)
        codes = (s > 0.5).long() - (s < -0.5).long()
    else:
        d = threshold_max(w, t)
        codes = (w > d).long() - (w < -d).long()
    y = wp * (codes == 1) - wn * (codes == -1) + noise * torch.randn(n, generator=g)
    return {"w": w, "y": y.float(), "codes": codes}


def fit_ternary_toy(w_init: torch.Tensor, y: torch.Tensor, steps: int = 60, lr_scales: float = 1e-3,
                    lr_latent: float = 0.0, t: float = DEFAULT_T, wrong_sign: bool = False,
                    target_codes: torch.Tensor | None = None, wp0: float = 1.0, wn0: float = 1.0,
                    max_scale: float = 1e4) -> dict[str, list[float]]:
    """Fit ``ternarize(w, Wp, Wn)`` to ``y`` by plain gradient descent on ``L = 1/2 ||q - y||^2``.

    Wp and Wn start at ``wp0``, ``wn0`` (1.0, as in the official code) and are clamped at 1e-4 after each
    step as in training; the latent weights move only if ``lr_latent > 0``.  With ``wrong_sign`` the
    quantizer uses the wrong sign of dL/dWn.  Stops early once a scale exceeds ``max_scale``.
    Returns per step (step 0 = the start): wp, wn, loss, the three shares and, given ``target_codes``,
    the share of weights whose code equals the target's (``agreement``).
    """
    w = w_init.detach().clone().requires_grad_(lr_latent > 0)
    wp = torch.tensor(float(wp0), requires_grad=True)
    wn = torch.tensor(float(wn0), requires_grad=True)
    hist: dict[str, list[float]] = {k: [] for k in ("step", "wp", "wn", "loss", "neg", "zero", "pos", "agreement")}

    def record(step: int, loss: float) -> None:
        d = threshold_max(w, t)
        shares = region_shares(w.detach(), d)
        hist["step"].append(step)
        hist["wp"].append(float(wp.detach()))
        hist["wn"].append(float(wn.detach()))
        hist["loss"].append(loss)
        for k in ("neg", "zero", "pos"):
            hist[k].append(shares[k])
        if target_codes is not None:
            codes = (w.detach() > d).long() - (w.detach() < -d).long()
            hist["agreement"].append(float((codes == target_codes).float().mean()))

    for step in range(steps + 1):
        q = ternarize_wrong_sign(w, wp, wn, t) if wrong_sign else ternarize(w, wp, wn, t)
        loss = 0.5 * ((q - y) ** 2).sum()
        record(step, float(loss.detach()))
        if step == steps or max(float(wp.detach()), float(wn.detach())) > max_scale:
            break
        loss.backward()
        with torch.no_grad():
            wp -= lr_scales * wp.grad
            wn -= lr_scales * wn.grad
            wp.clamp_(min=1e-4)
            wn.clamp_(min=1e-4)
            if lr_latent > 0:
                w -= lr_latent * w.grad
                w.grad = None
        wp.grad = wn.grad = None
    if target_codes is None:
        del hist["agreement"]
    return hist


def quantizer_gradients(fn: Callable, w: torch.Tensor, wp: float, wn: float, g: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dw, dL/dWp, dL/dWn) of a quantizer ``fn(w, wp, wn) -> q`` for an upstream gradient ``g = dL/dq``,
    computed by autograd on fresh copies (dtype of ``w``)."""
    w = w.detach().clone().requires_grad_(True)
    wp_t = torch.tensor(float(wp), dtype=w.dtype, requires_grad=True)
    wn_t = torch.tensor(float(wn), dtype=w.dtype, requires_grad=True)
    fn(w, wp_t, wn_t).backward(g.to(w.dtype))
    return w.grad, wp_t.grad, wn_t.grad


def ttq_gradients(w: torch.Tensor, wp: float, wn: float, delta: float, g: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dL/dw, dL/dWp, dL/dWn) of ``ttq_lib.TTQFunction`` (the hand-written backward, Eqs. 7-8) for an
    upstream gradient ``g = dL/dq`` at threshold ``delta``."""
    d = torch.tensor(float(delta), dtype=w.dtype)
    return quantizer_gradients(lambda x, a, b: TTQFunction.apply(x, a, b, d), w, wp, wn, g)


# ----- exercises -----------------------------------------------------------------------------------


def check_exercise(student: Callable, reference: Callable, cases: Sequence[tuple], atol: float = 1e-6) -> str:
    """Compare a student's function with ttq_lib's on each tuple of arguments in ``cases``.

    Returns "not attempted yet" while the student's function returns None, raises AssertionError naming
    the first case that differs, else returns a success message.  Outputs may be numbers, tensors or
    tuples of them.
    """
    for i, args in enumerate(cases):
        got = student(*args)
        if got is None:
            return "not attempted yet: fill in the function above and run this cell again"
        want = reference(*args)
        got_t = got if isinstance(got, (tuple, list)) else (got,)
        want_t = want if isinstance(want, (tuple, list)) else (want,)
        assert len(got_t) == len(want_t), f"case {i}: expected {len(want_t)} output(s), got {len(got_t)}"
        for j, (a, b) in enumerate(zip(got_t, want_t)):
            a = torch.as_tensor(a, dtype=torch.float64)
            b = torch.as_tensor(b, dtype=torch.float64)
            assert a.shape == b.shape, f"case {i}, output {j}: shape {tuple(a.shape)} != expected {tuple(b.shape)}"
            assert torch.allclose(a, b, atol=atol, rtol=1e-5), (
                f"case {i}, output {j}: max difference {float((a - b).abs().max()):.3g} from ttq_lib's answer")
    return f"correct: all {len(cases)} cases match ttq_lib"
