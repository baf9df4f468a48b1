"""Threshold statistics for notebook 01: how much of a layer each threshold rule zeroes, and at what error.

Notation of the paper (Sec. 3): latent weights ``w``, threshold ``delta``, regions
I_p = {w > delta}, I_z = {|w| <= delta}, I_n = {w < -delta}, ternary weights ``q`` = +Wp / 0 / -Wn (Eq. 6).
Here: the shares of the three regions, the least-squares scales (:func:`region_means`, from
:mod:`ttq_lib.quantizers`), the relative error of a ternary approximation, sweeps over the threshold factor
``t`` and the threshold rules side by side.
"""
from __future__ import annotations

from typing import Iterable, Sequence

import torch

from ..quantizers import code_shares, region_means, scale_codes, ternary_codes
from ..thresholds import DEFAULT_T, check_weight, threshold_max, threshold_sparsity, threshold_twn

__all__ = ["region_shares", "region_means", "ternary_approximation", "ternary_error", "threshold_sweep",
           "rule_summary", "zero_share_problem"]


@torch.no_grad()
def region_shares(w: torch.Tensor, delta: torch.Tensor | float) -> dict[str, float]:
    """Shares of the weights in I_n = {w < -delta}, I_z = {|w| <= delta}, I_p = {w > delta} (sum to 1)."""
    check_weight(w)
    return code_shares(ternary_codes(w, float(delta)))


@torch.no_grad()
def ternary_approximation(w: torch.Tensor, delta: torch.Tensor | float, wp: float, wn: float) -> torch.Tensor:
    """The ternary tensor ``+wp`` on I_p, 0 on I_z, ``-wn`` on I_n (Eq. 6) for any scales, even 0."""
    return scale_codes(ternary_codes(w, float(delta)), torch.tensor(wp, dtype=w.dtype),
                       torch.tensor(wn, dtype=w.dtype))


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


@torch.no_grad()
def zero_share_problem(delta, w: torch.Tensor, r: float) -> str | None:
    """What is wrong with ``delta`` as a threshold that zeroes a share ``r`` of ``w``, or None if nothing.

    The fixed-sparsity rule asks for a share r of weights with ``|w| <= delta``; with n weights a share can
    only move in steps of 1/n, so a threshold is right when its number of zeros differs from ``r * n`` by less
    than one weight: exactly ``r * n`` when that is a whole number, else the count just below or just above it
    (the check of notebook 01's exercise: it asks what the exercise states, not for one rounding convention).
    """
    try:
        d = float(delta)
    except (TypeError, ValueError):
        return f"the threshold must be a number (or a 0-dim tensor), got {type(delta).__name__}"
    a = w.detach().abs().flatten()
    zeros = int((a <= d).sum())
    if abs(zeros - r * a.numel()) >= 1 - 1e-9:
        return (f"with your threshold {d:.6g}, a share {zeros / a.numel():.4f} of the {a.numel()} weights is zero "
                f"({zeros} weights), not r = {r} ({r * a.numel():g} weights, to within less than one)")
    return None
