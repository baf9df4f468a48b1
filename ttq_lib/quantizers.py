"""The TTQ quantizer with its hand-derived gradients, and the TWN baseline.

TTQ (Zhu et al. 2017, Sec. 3), for one layer with latent weights ``w`` and threshold ``delta``::

    I_p = {w > delta},  I_z = {|w| <= delta},  I_n = {w < -delta}
    q   = +Wp on I_p,  0 on I_z,  -Wn on I_n                                  (Eq. 6)
    dL/dWp = sum_{I_p} g                                                      (Eq. 7)
    dL/dWn = -sum_{I_n} g     (Wn is stored positive and used as -Wn)
    dL/dw  = Wp * g on I_p,  1 * g on I_z,  Wn * g on I_n                     (Eq. 8)

with ``g = dL/dq``.  The paper prints Eq. 7 for Wn without the minus sign; the value used is ``-Wn``, so
the chain rule gives the minus.  Getting it wrong makes Wn move the wrong way (see notebook 02).

Checks.  :func:`ternarize` and :func:`twn_ternarize` refuse bad input (NaN / Inf weights, scales <= 0, a bad
``delta``) with a ValueError.  Those checks read values back from the tensors: on a GPU each is a host-device
synchronisation, and under ``torch.compile`` each is a graph break.  The autograd functions themselves
(:class:`TTQFunction`, :class:`TWNFunction`) read nothing back, and the ternary layers call them directly,
checking their weights and scales where those are created, loaded and stepped instead.  The debug switch
:func:`set_checks` (or ``TTQ_CHECKS=1`` in the environment) makes the layers check in every forward pass too.
"""
from __future__ import annotations

import math
import numbers
import os

import torch

from .thresholds import DEFAULT_T, check_weight, threshold, threshold_twn

#: The environment variable that turns the per-forward checks of the ternary layers on (see :func:`set_checks`).
ENV_CHECKS = "TTQ_CHECKS"


def _checks_from_env() -> bool:
    value = os.environ.get(ENV_CHECKS, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise ValueError(f"{ENV_CHECKS}={value!r} is not understood: set {ENV_CHECKS}=1 to check every ternary layer's "
                     f"weights and scales in each forward pass, or {ENV_CHECKS}=0 (or unset it) not to")


_checks = _checks_from_env()


def set_checks(enabled: bool) -> bool:
    """Turn the debug checks of the ternary layers on or off; returns the previous setting.

    On, every forward pass of a ternary layer first checks that its latent weight is finite and its Wp, Wn
    are positive (the checks :func:`ternarize` does), and :func:`ttq_lib.layers.clamp_scales_` checks after
    each step: clear errors at the layer that went wrong, at the price of a host-device sync per layer (and
    graph breaks under ``torch.compile``).  Off (the default, unless ``TTQ_CHECKS=1``), the layers check only
    where weights and scales are created and loaded, and training notices divergence from its loss.
    """
    global _checks
    previous, _checks = _checks, bool(enabled)
    return previous


def checks_enabled() -> bool:
    """Whether the ternary layers check their weights and scales in every forward pass (:func:`set_checks`)."""
    return _checks


def check_scale(s: torch.Tensor, name: str) -> torch.Tensor:
    """Return ``s`` as a tensor if it is one positive number, else raise a ValueError naming the fix."""
    if not isinstance(s, torch.Tensor):
        s = torch.tensor(float(s))
    if s.numel() != 1:
        raise ValueError(f"{name} must be a single number (0-dim tensor), got shape {tuple(s.shape)}")
    v = float(s.detach())
    if not v > 0.0:  # also catches NaN
        raise ValueError(
            f"{name}={v} is not positive: the scales of a ternary layer must be > 0 "
            "(clamp them after each optimizer step with ttq_lib.clamp_scales_)"
        )
    return s


def check_delta(delta, weight: torch.Tensor) -> torch.Tensor:
    """An explicit threshold as a detached 0-dim tensor; a Python number gets ``weight``'s dtype and device.

    ``delta`` must be finite and >= 0: with a negative one the regions of Eq. 6, I_p = {w > delta} and
    I_n = {w < -delta}, overlap (a weight in (delta, -delta) would be both +Wp and -Wn).
    """
    if isinstance(delta, torch.Tensor):
        if delta.numel() != 1:
            raise ValueError(f"delta must be a single number (0-dim tensor), got shape {tuple(delta.shape)}; "
                             "pass one threshold per layer")
        v = float(delta.detach())
    elif isinstance(delta, numbers.Real) and not isinstance(delta, bool):
        v = float(delta)  # checked before rounding to weight's dtype, so the message shows what was passed
    else:
        raise TypeError(f"delta must be a Python number or a 0-dim tensor, got {type(delta).__name__}")
    if not math.isfinite(v):
        raise ValueError(f"delta={v} is not finite: pass a finite threshold >= 0, or leave delta=None "
                         "to use the layer's threshold rule")
    if v < 0.0:
        raise ValueError(f"delta={v} is negative: the regions w > delta and w < -delta would overlap; "
                         f"pass abs(delta) = {-v}, or leave delta=None to use the layer's threshold rule")
    if isinstance(delta, torch.Tensor):
        return delta.detach().reshape(())
    return torch.tensor(v, dtype=weight.dtype, device=weight.device)


@torch.no_grad()
def ternary_codes(weight: torch.Tensor, delta: torch.Tensor | float) -> torch.Tensor:
    """The integer codes {-1, 0, +1} (int8) of the regions I_n, I_z, I_p; what the packed formats store."""
    return (weight > delta).to(torch.int8) - (weight < -delta).to(torch.int8)


def scale_codes(codes: torch.Tensor, wp: torch.Tensor | float, wn: torch.Tensor | float) -> torch.Tensor:
    """Eq. 6 from the codes: ``+wp`` where the code is +1, ``-wn`` where it is -1, 0 elsewhere.

    The result has the scales' dtype (``torch.result_type``); any scales are accepted, 0 included, so
    teaching code can draw the approximation for scales a layer would refuse.
    """
    wp = torch.as_tensor(wp, device=codes.device)
    wn = torch.as_tensor(wn, device=codes.device)
    dtype = torch.result_type(wp, wn)
    zero = torch.zeros((), dtype=dtype, device=codes.device)
    return _scale_regions(codes > 0, codes < 0, wp.to(dtype), -wn.to(dtype), zero)


def _regions(w: torch.Tensor, delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The boolean masks of I_p = {w > delta} and I_n = {w < -delta} (Eq. 6); I_z is where neither holds."""
    return w > delta, w < -delta


def _scale_regions(pos: torch.Tensor, neg: torch.Tensor, plus: torch.Tensor, minus: torch.Tensor,
                   zero: torch.Tensor) -> torch.Tensor:
    """Eq. 6 from the region masks: ``plus`` on I_p, ``minus`` on I_n, ``zero`` elsewhere (two ``where``)."""
    return torch.where(pos, plus, torch.where(neg, minus, zero))


def _zero_like(w: torch.Tensor) -> torch.Tensor:
    """``w - w``: +0.0 where ``w`` is finite (exactly, in IEEE arithmetic), NaN where it is NaN or Inf.

    Used as the zero region of Eq. 6.  A NaN weight compares false with any threshold (and makes the max rule's
    threshold NaN), so its code is 0; with a plain 0 the layer would then silently compute with zeros.  Since
    the layers no longer check their weights in every forward pass (a host sync), this lets a diverged layer
    show up as a NaN loss, which training reads back every few steps."""
    return w.detach() - w.detach()


@torch.no_grad()
def code_shares(codes: torch.Tensor) -> dict[str, float]:
    """Shares of negative, zero and positive codes (they sum to 1): the sparsity the paper plots."""
    n = codes.numel()
    neg, pos = int((codes < 0).sum()), int((codes > 0).sum())
    return {"neg": neg / n, "zero": (n - neg - pos) / n, "pos": pos / n}


class TTQFunction(torch.autograd.Function):
    """Forward Eq. 6, backward Eqs. 7-8 written by hand (the threshold is a constant).

    Written for few operations, since every ternary layer runs this in every training step and on a GPU each
    operation is at least one kernel launch (``benchmarks/op_count.py`` counts them).  The forward makes the two
    region masks and two ``where``; the backward reuses the masks (saved, a byte per weight each) and needs
    three full-size operations for dL/dw and two masked sums for dL/dWp, dL/dWn."""

    @staticmethod
    def forward(ctx, w, wp, wn, delta):
        pos, neg = _regions(w, delta)
        ctx.save_for_backward(pos, neg, wp, wn)
        return _scale_regions(pos, neg, wp.to(w.device, w.dtype), -wn.to(w.device, w.dtype), _zero_like(w))

    @staticmethod
    def backward(ctx, g):
        pos, neg, wp, wn = ctx.saved_tensors
        grad_w = grad_wp = grad_wn = None
        if ctx.needs_input_grad[0]:  # Eq. 8: the scale of each region times g, 1 on I_z
            grad_w = g * _scale_regions(pos, neg, wp.to(g.dtype), wn.to(g.dtype), 1.0)
        if ctx.needs_input_grad[1]:  # Eq. 7; where(), not g * pos, which would first copy pos to g's dtype
            grad_wp = torch.where(pos, g, 0.0).sum().reshape(wp.shape).to(wp.dtype)
        if ctx.needs_input_grad[2]:  # the minus: the layer uses -Wn (module docstring)
            grad_wn = torch.where(neg, g, 0.0).sum().neg().reshape(wn.shape).to(wn.dtype)
        return grad_w, grad_wp, grad_wn, None


def ternarize(
    weight: torch.Tensor,
    wp: torch.Tensor,
    wn: torch.Tensor,
    t: float | None = DEFAULT_T,
    *,
    sparsity: float | None = None,
    delta: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Trained ternary quantization of ``weight`` to {+wp, 0, -wn} (Eq. 6) with gradients Eqs. 7-8.

    ``wp`` and ``wn`` are positive 0-dim tensors (usually ``nn.Parameter``).  The threshold is
    ``t * max|w|`` (paper default t = 0.05) unless ``sparsity=r`` asks for the r-quantile of |w|, or an
    explicit ``delta`` (a Python number or a 0-dim tensor, finite and >= 0) is given.  Returns a tensor of
    ``weight``'s shape.
    """
    check_weight(weight)
    wp = check_scale(wp, "wp")
    wn = check_scale(wn, "wn")
    delta = threshold(weight, t, sparsity) if delta is None else check_delta(delta, weight)
    return TTQFunction.apply(weight, wp, wn, delta.detach())


class TWNFunction(torch.autograd.Function):
    """Ternary Weight Networks: ``alpha * sign(w)`` above ``delta``, 0 below; straight-through gradient."""

    @staticmethod
    def forward(ctx, w, delta):
        pos, neg = _regions(w, delta)
        alpha = _twn_alpha(w, pos | neg)
        return _scale_regions(pos, neg, alpha, -alpha, _zero_like(w))

    @staticmethod
    def backward(ctx, g):
        return g, None


def _twn_alpha(w: torch.Tensor, nonzero: torch.Tensor) -> torch.Tensor:
    """``mean(|w|)`` over the non-zero region ``nonzero`` (a mask), 0 when it is empty; Li & Liu 2016, Eq. 6.

    A masked sum over a clamped count rather than ``|w|[nonzero].mean()``: boolean indexing has a
    data-dependent shape, so it syncs with the host on a GPU and breaks a ``torch.compile`` graph.  When
    every code is 0 the sum is 0 and the count is clamped to 1, so alpha is 0 as before.  The sum adds the
    same numbers with zeros between them, in another order, so it may differ from the indexed mean in the last
    bits: measured on 2,000 random ResNet-20-sized layers, equal in 53 %, at most 2.1 units in the last place
    apart, and as close to the float64 mean on average.
    """
    total = torch.where(nonzero, w.detach().abs(), 0).sum()
    return total / nonzero.sum().clamp_min(1)


@torch.no_grad()
def twn_scale(weight: torch.Tensor, delta: torch.Tensor | None = None) -> torch.Tensor:
    """TWN's single scale: ``alpha = mean(|w| over |w| > delta)`` (Li & Liu 2016, Eq. 6)."""
    delta = threshold_twn(weight) if delta is None else check_delta(delta, weight)
    pos, neg = _regions(weight, delta)
    return _twn_alpha(weight, pos | neg)


@torch.no_grad()
def region_means(w: torch.Tensor, delta: torch.Tensor | float, empty: float = 0.0) -> tuple[float, float]:
    """(Wp, Wn) = (mean of w over I_p, mean of -w over I_n): for fixed regions the scales that minimise
    ``||w - q||_2`` (setting d/dWp sum_{I_p} (w_i - Wp)^2 = 0 gives the mean).  An empty region gives
    ``empty``.  TTQ's counterpart of :func:`twn_scale`; ``scale_init="mean"`` starts a layer's Wp, Wn here."""
    check_weight(w)
    d = float(delta)
    pos, neg = w[w > d], w[w < -d]
    return (float(pos.mean()) if pos.numel() else empty, float(-neg.mean()) if neg.numel() else empty)


def twn_ternarize(weight: torch.Tensor, delta: torch.Tensor | float | None = None) -> torch.Tensor:
    """The TWN baseline: threshold ``0.7 * mean|w|`` (or an explicit ``delta``: a number or 0-dim tensor,
    finite and >= 0), output ``alpha * sign(w)`` or 0, gradient passed straight."""
    check_weight(weight)
    delta = threshold_twn(weight) if delta is None else check_delta(delta, weight)
    return TWNFunction.apply(weight, delta.detach())


