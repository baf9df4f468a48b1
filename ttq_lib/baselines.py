"""Weight-only baselines to set TTQ against: binary weights and INT-k per-channel fake quantization.

Each function maps a full-precision weight tensor to the values a deployed layer would compute with
("fake quantization": the result is a float tensor holding the quantized values), and
:func:`storage_bits` counts what such a layer stores, so accuracy can be plotted against bits per weight.

* Binary (BinaryConnect's sign, Courbariaux et al. 2015, with XNOR-Net's / BWN's mean-magnitude scale,
  Rastegari et al. 2016, here one scale per layer): ``alpha * sign(w)`` with ``alpha = mean|w|``; for a fixed
  sign pattern ``alpha = mean|w|`` minimises ``||w - alpha * sign(w)||_2``.
* INT-k, symmetric, per output channel: ``s_c = max|w_c| / (2^(k-1) - 1)``, ``q = s_c * clamp(round(w / s_c))``;
  every weight moves by at most half a step ``s_c / 2`` (round to nearest), and the largest one is exact.
* Ternary, without training: TTQ's rule (threshold ``t * max|w|``, Sec. 3 of the TTQ paper) with Wp, Wn at
  the mean magnitude of each region, and TWN (Li & Liu 2016), both through :mod:`ttq_lib.quantizers`.

Only torch and the core: the course layer (:mod:`ttq_lib.course.sensitivity`) applies these to whole models.
"""
from __future__ import annotations

import math
import re

import torch

from .quantizers import region_means, scale_codes, ternary_codes, twn_ternarize
from .thresholds import DEFAULT_T, check_weight, threshold_max

__all__ = ["SCHEMES", "binarize", "int_scales", "int_quantize", "ttq_no_training", "fake_quantize",
           "storage_bits", "check_weight_scheme"]

#: Schemes :func:`fake_quantize` and :func:`storage_bits` know ("int<k>" for any k from 2 to 16 works too).
SCHEMES = ("fp", "int8", "int4", "ttq", "twn", "binary")
SCALE_BITS = 32          # every scale (per layer or per channel) is stored as one fp32 number
_INT = re.compile(r"int(\d+)$")


def check_weight_scheme(scheme: str) -> str:
    """``scheme`` if known, else a ValueError listing the known ones."""
    m = _INT.match(scheme)
    if scheme in SCHEMES or (m and 2 <= int(m.group(1)) <= 16):
        return scheme
    raise ValueError(f"unknown weight scheme {scheme!r}; use one of {', '.join(SCHEMES)} (or int<k>, k = 2..16)")


@torch.no_grad()
def binarize(w: torch.Tensor) -> torch.Tensor:
    """``mean|w| * sign(w)`` with one scale for the whole tensor; a weight exactly 0 counts as positive
    (a binary layer has two values only, and ``torch.sign(0) = 0`` would make a third)."""
    check_weight(w)
    alpha = w.abs().mean()
    return torch.where(w >= 0, alpha, -alpha)


@torch.no_grad()
def int_scales(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Per-output-channel step sizes ``max|w_c| / (2^(bits-1) - 1)``, shape ``[C_out]`` (dim 0 of ``w``).

    Symmetric: the codes run from ``-(2^(bits-1) - 1)`` to ``+(2^(bits-1) - 1)`` (the code ``-2^(bits-1)`` is
    left unused, so zero is exact and the range is the same on both sides)."""
    check_weight(w)
    if not isinstance(bits, int) or not 2 <= bits <= 16:
        raise ValueError(f"bits must be an integer from 2 to 16, got {bits!r}")
    qmax = 2 ** (bits - 1) - 1
    return w.detach().abs().reshape(len(w), -1).amax(dim=1) / qmax


@torch.no_grad()
def int_quantize(w: torch.Tensor, bits: int) -> torch.Tensor:
    """Symmetric per-output-channel INT-``bits`` fake quantization: ``s_c * clamp(round(w / s_c), -qmax, qmax)``.

    |w - q| <= s_c / 2 for every weight of channel c; a channel of zeros (s_c = 0) stays zero."""
    scales = int_scales(w, bits)
    qmax = 2 ** (bits - 1) - 1
    s = scales.reshape(-1, *([1] * (w.dim() - 1)))
    # Dividing by a zero step would give NaN; such a channel is all zeros, and so is its quantization.
    safe = torch.where(s > 0, s, torch.ones_like(s))
    return torch.where(s > 0, torch.clamp(torch.round(w / safe), -qmax, qmax) * safe, torch.zeros_like(w))


@torch.no_grad()
def ttq_no_training(w: torch.Tensor, t: float = DEFAULT_T) -> torch.Tensor:
    """TTQ's forward rule (Eq. 6) with threshold ``t * max|w|`` and, in place of trained scales, Wp and Wn at
    the mean magnitude of each region (the least-squares choice for fixed regions): the state a TTQ run
    starts from with ``scale_init="mean"``."""
    delta = threshold_max(w, t)
    wp, wn = region_means(w, delta)
    return scale_codes(ternary_codes(w, delta), wp, wn).to(w.dtype)


def fake_quantize(w: torch.Tensor, scheme: str) -> torch.Tensor:
    """The values a layer computes with under ``scheme``: "fp" (a copy), "binary", "ttq" (no training),
    "twn", or "int<k>" (per-channel symmetric)."""
    check_weight_scheme(scheme)
    if scheme == "fp":
        return w.detach().clone()
    if scheme == "binary":
        return binarize(w)
    if scheme == "ttq":
        return ttq_no_training(w)
    if scheme == "twn":
        with torch.no_grad():
            return twn_ternarize(w.detach())
    return int_quantize(w, int(_INT.match(scheme).group(1)))


def storage_bits(scheme: str, shape: tuple[int, ...] | torch.Size, ternary_bits: float = 2.0) -> float:
    """Bits a deployed layer of weight shape ``shape`` stores for its weights under ``scheme``.

    Convention (the one of the accuracy-against-bits plot): codes at their width plus every scale at 32 bits.
    fp: 32 per weight; binary: 1 per weight + 1 scale; ttq: ``ternary_bits`` per weight (2: the paper's 2-bit
    codes, 4 per byte; pass 1.6 for base-3 packing, 5 codes per byte, or log2(3) = 1.585 for the bound) + 2
    scales (Wp, Wn); twn: the same codes + 1 scale; int<k>: k per weight + one scale per output channel.
    Biases and batch norm are not counted (they are the same in every variant).
    """
    check_weight_scheme(scheme)
    n = math.prod(shape)
    if scheme == "fp":
        return 32.0 * n
    if scheme == "binary":
        return n + SCALE_BITS
    if scheme in ("ttq", "twn"):
        return ternary_bits * n + SCALE_BITS * (2 if scheme == "ttq" else 1)
    return int(_INT.match(scheme).group(1)) * n + SCALE_BITS * shape[0]
