"""Figures of notebook 01's network-level sweep (:mod:`ttq_lib.course.threshold_sweep`): accuracy against t and r."""
from __future__ import annotations

from .threshold_sweep import PAPER_BEST_R


def plot_accuracy_sweep(sweep: dict, axes=None, t_paper: float = 0.05, paper_best_r: tuple = PAPER_BEST_R):
    """Two panels: test accuracy against t (TTQ's rule) and against the sparsity r (fixed-sparsity rule).

    Each panel marks the full-precision accuracy (dashed), TWN's point (a star: on the left at its mean
    threshold / max|w|, on the right at its share of zeros) and on the right the band of r the paper found
    best after TTQ training.  Returns the two axes.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    ax_t, ax_r = axes
    panels = ((ax_t, "t", "t", "t  (threshold = t · max|w| in every layer)"),
              (ax_r, "r", "sparsity", "sparsity r  (the same share of zeros in every layer)"))
    for ax, kind, key, xlabel in panels:
        pts = sweep[kind]
        if pts:
            ax.plot([p[key] for p in pts], [p["accuracy"] for p in pts], "o-", color="tab:blue",
                    label="TTQ rule, no training" if kind == "t" else "fixed r, no training")
        ax.axhline(sweep["fp"], color="k", ls="--", lw=1, label=f"full precision {sweep['fp']:.1f} %")
        ax.axhline(10, color="0.6", ls=":", lw=1, label="chance (10 %)")
        if sweep.get("twn"):
            tw = sweep["twn"]
            x = tw["t_equiv"] if kind == "t" else tw["zero"]
            ax.plot([x], [tw["accuracy"]], "*", ms=13, color="tab:orange",
                    label=f"TWN 0.7·mean|w| ({tw['accuracy']:.1f} %)")
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    ax_t.axvline(t_paper, color="tab:red", lw=1, label=f"paper t = {t_paper:g}")
    lo, hi = paper_best_r
    ax_r.axvspan(lo, hi, color="tab:green", alpha=0.15, label=f"paper: best r {lo:g}-{hi:g} (after training)")
    ax_t.set_ylabel(f"test accuracy (%), {sweep['test_images']:,} images")
    ax_t.set_title(f"ternarized + batch norm re-estimated on {sweep['recal_images']:,} images", fontsize=9)
    ax_r.set_title("same, threshold = the r-quantile of |w|", fontsize=9)
    for ax in axes:
        ax.legend(fontsize=7, loc="lower center")
    return axes
