"""The paper's numbers that this project reproduces, as data (Zhu, Han, Mao, Dally, ICLR 2017, arXiv:1612.01064).

CIFAR-10 test errors come from the README of the authors' released code (github.com/czhu95/ternarynet) and the
abstract. They are single numbers per model: the paper gives no seeds, no spread, and no TWN result on CIFAR-10.
"""
from __future__ import annotations

__all__ = ["PAPER_CIFAR10_ERROR", "PAPER_SOURCE", "paper_error"]

#: CIFAR-10 test error (%) reported by the authors, per model and method ("fp": full precision, "ttq").
PAPER_CIFAR10_ERROR = {
    "resnet20": {"fp": 8.23, "ttq": 8.87},
    "resnet32": {"fp": 7.67, "ttq": 7.63},
    "resnet44": {"fp": 7.18, "ttq": 7.02},
    "resnet56": {"fp": 6.80, "ttq": 6.44},
}
#: Where :data:`PAPER_CIFAR10_ERROR` comes from, for captions.
PAPER_SOURCE = "Zhu et al., Trained Ternary Quantization, ICLR 2017 (README of github.com/czhu95/ternarynet)"


def paper_error(model: str, method: str) -> float | None:
    """The paper's CIFAR-10 test error (%) for ``model`` and ``method``; None where the paper gives none
    (TWN, or a depth it did not train)."""
    return PAPER_CIFAR10_ERROR.get(model, {}).get(method)
