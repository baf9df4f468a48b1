"""Notebook 06's figures: accuracy against bits per weight (with its Pareto front) and per-layer sensitivity.

The numbers come from :mod:`ttq_lib.course.sensitivity`; matplotlib is imported inside the functions.
"""
from __future__ import annotations

from typing import Sequence

SCHEME_MARKERS = {"fp": "s", "int8": "D", "int4": "d", "ttq": "o", "twn": "^", "binary": "v"}


def pareto_front(points: Sequence[dict], x: str = "bits", y: str = "acc") -> list[dict]:
    """The points no other point beats: none has fewer (or equal) bits and a higher accuracy.
    Returned by increasing bits; ties in bits keep the more accurate point."""
    front, best = [], float("-inf")
    for p in sorted(points, key=lambda p: (p[x], -p[y])):
        if p[y] > best:
            front.append(p)
            best = p[y]
    return front


def plot_pareto(no_training: Sequence[dict], finetuned: Sequence[dict] = (), ax=None, show_before: bool = True):
    """Accuracy (%) against bits per weight (log scale): the no-training points after batch-norm
    recalibration (filled; their accuracy before it, hollow, if ``show_before``), the fine-tuned runs (stars),
    and the Pareto front through all filled points and stars (dashed)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, NullLocator

    if ax is None:
        _, ax = plt.subplots(figsize=(8, 4.6))
    for p in no_training:
        marker = SCHEME_MARKERS.get(p["scheme"], "o")
        line = ax.scatter(p["bits"], p["acc"], marker=marker, s=55, zorder=3, label=f"{p['label']}, no training")
        if show_before and "acc_no_recal" in p and p["scheme"] != "fp":
            ax.scatter(p["bits"], p["acc_no_recal"], marker=marker, s=55, facecolors="none",
                       edgecolors=line.get_facecolor(), zorder=3)
    for p in finetuned:
        ax.scatter(p["bits"], p["acc"], marker="*", s=160, zorder=4, label=p["label"])
    front = pareto_front(list(no_training) + list(finetuned))
    ax.plot([p["bits"] for p in front], [p["acc"] for p in front], ls="--", color="0.4", lw=1, zorder=2,
            label="Pareto front")
    ax.set_xscale("log", base=2)
    ticks = sorted({round(p["bits"], 2) for p in list(no_training) + list(finetuned)})
    ax.xaxis.set_major_locator(FixedLocator(ticks))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ticks], fontsize=8)
    ax.set_xlabel("bits per weight (all conv and linear weights, scales included; log scale)")
    ax.set_ylabel("test accuracy (%)")
    if show_before:
        ax.set_title("filled: batch norm recalibrated; hollow: before recalibration", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    return ax


def plot_layer_sensitivity(alone: Sequence[dict], kept: Sequence[dict] | None = None,
                           reference: dict[str, float] | None = None, axes=None, cmap: str = "viridis"):
    """Accuracy per layer with one layer quantized (left) and with every layer but one (right), bars
    coloured by the layer's number of weights (colour bar); ``reference`` maps a label to a horizontal line."""
    import matplotlib.pyplot as plt
    import numpy as np
    from matplotlib.colors import LogNorm

    panels = [("one layer quantized, all others full precision", alone)]
    if kept:
        panels.append(("every layer quantized but this one", kept))
    if axes is None:
        _, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), 3.8), squeeze=False)
        axes = axes[0]
    sizes = [r["numel"] for rows in (alone, kept or []) for r in rows]
    norm = LogNorm(min(sizes), max(sizes)) if min(sizes) < max(sizes) else None
    colors = plt.get_cmap(cmap)
    values = [r["acc"] for _, rows in panels for r in rows] + list((reference or {}).values())
    for ax, (title, rows) in zip(axes, panels):
        x = np.arange(len(rows))
        ax.bar(x, [r["acc"] for r in rows], color=[colors(norm(r["numel"]) if norm else 0.5) for r in rows])
        for i, (label, value) in enumerate((reference or {}).items()):
            ax.axhline(value, color="k", ls=("--", ":", "-.")[i % 3], lw=1, label=f"{label}: {value:.1f} %")
        # one y range for both panels, so their bars compare by eye
        ax.set_ylim(max(0.0, min(values) - 5), min(100.0, max(values) + 3))
        ax.set_xticks(x, [r["layer"] for r in rows], rotation=70, ha="right", fontsize=7)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("test accuracy (%)")
    if reference:
        handles, labels = axes[0].get_legend_handles_labels()
        axes[0].figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8,
                              bbox_to_anchor=(0.5, 0.99), frameon=False)
    if norm:
        sm = plt.cm.ScalarMappable(norm=norm, cmap=colors)
        axes[-1].figure.colorbar(sm, ax=list(axes), label="weights in the layer", pad=0.01)
    return axes
