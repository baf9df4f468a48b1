"""Threshold rules that split a latent weight tensor into negative / zero / positive regions.

Paper, Sec. 3 ("Trained Ternary Quantization"): the threshold is ``delta = t * max|w|`` with the same ``t``
for every layer (t = 0.05 on CIFAR-10 and ImageNet).  The paper also tries a fixed sparsity ``r`` per layer
(the threshold is the r-quantile of |w|).  The baseline TWN (Li & Liu, 2016) uses ``delta = 0.7 * mean|w|``.

Every rule returns a 0-dim tensor and is computed without gradient: the paper treats the max (and the
quantile) as a constant when differentiating.

The public rules check their input (``check_weight``: a NaN or Inf weight is a clear ValueError).  That check
reads a value back from the tensor, a host-device synchronisation on a GPU and a graph break for
``torch.compile``, so the ternary layers call the unchecked ``*_unchecked`` variants in their forward pass
and check their weights where they are created, loaded and stepped instead (see :mod:`ttq_lib.layers`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

DEFAULT_T = 0.05
TWN_FACTOR = 0.7


def check_weight(w: torch.Tensor, name: str = "weight") -> None:
    """Reject tensors no threshold rule can work on: empty, or holding NaN / Inf.

    The NaN / Inf test reads a value from the tensor (a host-device sync); :func:`check_weight_meta` is the
    part that looks only at shape and dtype."""
    check_weight_meta(w, name)
    if not bool(torch.isfinite(w).all()):
        bad = int((~torch.isfinite(w)).sum())
        raise ValueError(
            f"{name} holds {bad} NaN or Inf value(s): training has diverged or the checkpoint is corrupt; "
            "lower the learning rate or reload a good checkpoint"
        )


def check_weight_meta(w: torch.Tensor, name: str = "weight") -> None:
    """The checks of :func:`check_weight` that need no value of ``w``: a non-empty floating-point tensor."""
    if not isinstance(w, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(w).__name__}")
    if w.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(w.shape)}): there is nothing to ternarize")
    if not w.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got dtype {w.dtype}")


#: The ternary quantizers: TTQ (trained Wp, Wn; Eqs. 6-8) and the TWN baseline (one shared scale).
TERNARY_METHODS = ("ttq", "twn")


@dataclass(frozen=True)
class Rule:
    """A ternary layer's threshold rule, checked once, here, where it is made.

    TTQ: ``delta = t * max|w|`` (Sec. 3; ``t`` omitted is the paper's 0.05, and ``t`` then holds the factor in
    use).  TWN: ``0.7 * mean|w|``, which has no t.  Either may instead keep a fixed share ``sparsity`` of zeros
    per layer (the r-quantile of |w|), and then has no t."""
    method: str = "ttq"
    t: float | None = None
    sparsity: float | None = None

    def __post_init__(self):
        if self.method not in TERNARY_METHODS:
            raise ValueError(f"method={self.method!r} is not one of {TERNARY_METHODS}")
        if self.sparsity is not None:
            if self.t is not None:
                raise ValueError(f"give either t ({self.t}) or sparsity ({self.sparsity}), not both")
            object.__setattr__(self, "sparsity", check_sparsity(self.sparsity))
        elif self.method == "ttq":
            object.__setattr__(self, "t", check_t(DEFAULT_T if self.t is None else self.t))
        elif self.t is not None:
            raise ValueError(f"t={self.t} does not apply to TWN, whose threshold is 0.7 * mean|w| (Li & Liu 2016): "
                             "drop t, or give sparsity=r for a fixed share of zeros, or use method='ttq'")


def check_t(t: float) -> float:
    """The paper's threshold factor must lie strictly inside (0, 1)."""
    t = float(t)
    if not (0.0 < t < 1.0) or math.isnan(t):
        raise ValueError(f"threshold factor t={t} is outside (0, 1); the paper uses t=0.05")
    return t


def check_sparsity(r: float) -> float:
    """A target sparsity is a share of zeros in [0, 1): r=0 is binary, r=1 would zero every weight."""
    r = float(r)
    if not (0.0 <= r < 1.0) or math.isnan(r):
        raise ValueError(f"sparsity r={r} is outside [0, 1); the paper sweeps r from 0 (binary) to 0.5")
    return r


@torch.no_grad()
def threshold_max(w: torch.Tensor, t: float = DEFAULT_T) -> torch.Tensor:
    """Paper Sec. 3: ``delta_l = t * max(|w_l|)``, the same t for every layer."""
    check_weight(w)
    return threshold_max_unchecked(w, check_t(t))


@torch.no_grad()
def threshold_max_unchecked(w: torch.Tensor, t: float) -> torch.Tensor:
    """:func:`threshold_max` without the checks (no host sync): ``t`` already checked, ``w`` finite.

    ``amax`` rather than ``max``: the same number, but ``max`` of a channels_last tensor first copies it to
    the default layout (measured on a 512x512x3x3 layer on the CPU: 18 ms against 1.2 ms), and the ternary
    layers run this for every layer in every training step."""
    return t * w.detach().abs().amax()


@torch.no_grad()
def threshold_sparsity(w: torch.Tensor, r: float) -> torch.Tensor:
    """Paper Sec. 3 (the alternative scheme): the r-quantile of |w|, so a share r of weights is zero.

    ``kthvalue`` is used rather than ``torch.quantile`` because the latter refuses tensors of more than
    16M elements (AlexNet's fully connected layers have 37M).  Weights with ``|w| <= delta`` become zero,
    so ``r = 0`` gives ``delta = 0`` (a binary layer).
    """
    check_weight(w)
    return threshold_sparsity_unchecked(w, check_sparsity(r))


@torch.no_grad()
def threshold_sparsity_unchecked(w: torch.Tensor, r: float) -> torch.Tensor:
    """:func:`threshold_sparsity` without the checks; ``k`` depends only on the shape, so no host sync."""
    a = w.detach().abs().flatten()
    k = int(round(r * a.numel()))
    if k == 0:
        return a.new_zeros(())
    return a.float().kthvalue(k).values.to(a.dtype)


@torch.no_grad()
def threshold_twn(w: torch.Tensor) -> torch.Tensor:
    """TWN (Li & Liu 2016, Eq. 5 approximation): ``delta = 0.7 * mean(|w|)``."""
    check_weight(w)
    return threshold_twn_unchecked(w)


@torch.no_grad()
def threshold_twn_unchecked(w: torch.Tensor) -> torch.Tensor:
    """:func:`threshold_twn` without the check (no host sync)."""
    return TWN_FACTOR * w.detach().abs().mean()


def threshold(w: torch.Tensor, t: float | None = DEFAULT_T, sparsity: float | None = None) -> torch.Tensor:
    """Pick the rule: a fixed sparsity when ``sparsity`` is given, else ``t * max|w|``."""
    if sparsity is not None:
        return threshold_sparsity(w, sparsity)
    if t is None:
        raise ValueError("give either t (the paper's rule, e.g. t=0.05) or sparsity (e.g. sparsity=0.4)")
    return threshold_max(w, t)


def threshold_unchecked(w: torch.Tensor, t: float | None, sparsity: float | None) -> torch.Tensor:
    """:func:`threshold` for a layer whose rule was checked when it was built: no check reads ``w``."""
    if sparsity is not None:
        return threshold_sparsity_unchecked(w, sparsity)
    return threshold_max_unchecked(w, t)
