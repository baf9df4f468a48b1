"""Figures of notebooks 03 and 04 that compare runs or epochs: the accuracy gap to full precision, the
ratio Wp / Wn per layer, and how a layer's latent-weight histogram moved away from epoch 0.

Rows are ``history.jsonl`` rows (:mod:`ttq_lib.training.history`); matplotlib is imported inside the functions.
"""
from __future__ import annotations

from typing import Sequence

from ..training.history import layer_names, layer_series
from .plots import _ax, integer_epoch_ticks, layer_colorbar


def accuracy_gap(history: Sequence[dict], reference_acc: float) -> tuple[list[int], list[float]]:
    """(epochs, ``reference_acc - test_acc`` in points) of one run: how far it is below the reference model."""
    return [r["epoch"] for r in history], [reference_acc - r["test_acc"] for r in history]


def plot_accuracy_gap(histories: dict[str, Sequence[dict]], reference_acc: float, paper_gap: float | None = None,
                      ax=None, reference: str = "full precision"):
    """The gap ``reference_acc - test_acc`` (percentage points; positive: below full precision) of each run
    against the epoch, with the paper's own gap as a dashed line: gaps compare across copies of the data,
    absolute accuracies do not."""
    ax = _ax(ax, (7.5, 3.6))
    for label, hist in histories.items():
        xs, gaps = accuracy_gap(hist, reference_acc)
        ax.plot(xs, gaps, marker="o", ms=3, label=label)
    ax.axhline(0.0, color="k", lw=0.8)
    if paper_gap is not None:
        ax.axhline(paper_gap, color="k", ls="--", lw=1, label=f"paper, ResNet-20: {paper_gap:+.2f}")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{reference} minus run (points)")
    ax.legend(fontsize=8)
    integer_epoch_ticks(ax)
    return ax


def plot_scale_ratio(history: Sequence[dict], start: dict | None = None, ax=None, cmap: str = "viridis"):
    """Wp / Wn of every ternary layer against the epoch, coloured by depth (colour bar); 1 is symmetric.

    Batch norm after each layer absorbs a common factor of Wp and Wn, so the ratio is what changes the function."""
    import matplotlib.pyplot as plt

    ax = _ax(ax, (7.5, 3.6))
    rows = ([start] if start else []) + list(history)
    names = layer_names(rows)
    colors = plt.get_cmap(cmap)
    for i, name in enumerate(names):
        xs, wp = layer_series(rows, name, "wp")
        _, wn = layer_series(rows, name, "wn")
        ax.plot(xs, [p / n for p, n in zip(wp, wn)], color=colors(i / max(1, len(names) - 1)), lw=1.2)
    ax.axhline(1.0, color="k", lw=0.8, ls=":")
    ax.set_xlabel("epoch")
    ax.set_ylabel("Wp / Wn")
    integer_epoch_ticks(ax)
    layer_colorbar(ax, names, cmap)
    return ax


def histogram_change(history: Sequence[dict], layer: str, epoch: int, start: dict) -> list[int]:
    """Per bin of the ``hist`` field (w / max|w| over [-1, 1]), the count at ``epoch`` minus the count at epoch 0."""
    rows = {r["epoch"]: r for r in list(history)}
    if epoch not in rows:
        raise ValueError(f"the history has no epoch {epoch}; it has {sorted(rows)}")
    if not start or layer not in start.get("hist", {}):
        raise ValueError("the change needs the epoch-0 row (runs.start_row) with this layer's histogram")
    return [a - b for a, b in zip(rows[epoch]["hist"][layer], start["hist"][layer])]


def plot_histogram_change(history: Sequence[dict], layer: str, epochs: Sequence[int], start: dict,
                          t: float, ax=None):
    """How the latent-weight histogram of one layer moved since epoch 0: count(epoch) - count(0) per bin
    (w / max|w|), for several epochs, with the threshold at +-t."""
    import numpy as np

    ax = _ax(ax, (7.5, 3.6))
    for e in epochs:
        change = np.asarray(histogram_change(history, layer, e, start), dtype=float)
        ax.stairs(change, np.linspace(-1, 1, len(change) + 1), label=f"epoch {e} - epoch 0", lw=1.4)
    ax.axhline(0.0, color="k", lw=0.8)
    ax.axvline(-t, color="k", lw=1, ls="--")
    ax.axvline(t, color="k", lw=1, ls="--", label=f"±t = ±{t:g}")
    ax.set_xlabel("latent weight / max|w|")
    ax.set_ylabel("change in count")
    ax.set_title(layer, fontsize=10)
    ax.legend(fontsize=8)
    return ax
