"""Gradient aids for notebook 02: the TTQ gradients (Eqs. 7-8) checked against autograd and finite
differences, the wrong sign of dL/dWn shown to fail, and a toy problem in which Wp and Wn learn.

Notation of the paper (Sec. 3) as in :mod:`ttq_lib.quantizers`: ``g = dL/dq`` for the ternary weights q.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from ..quantizers import TTQFunction, check_scale, ternarize
from ..thresholds import DEFAULT_T, check_weight, threshold_max
from .threshold_stats import region_shares

__all__ = ["ttq_autograd_reference", "WrongSignTTQFunction", "ternarize_wrong_sign", "finite_difference",
           "toy_target", "fit_ternary_toy", "quantizer_gradients", "ttq_gradients"]



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
    return WrongSignTTQFunction.apply(w, check_scale(wp, "wp"), check_scale(wn, "wn"), threshold_max(w, t))


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
