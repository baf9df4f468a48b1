"""The notebooks' figures (and their one markdown table); matplotlib is imported inside the functions.

* Thresholds (notebook 01): a weight histogram coloured by region, the error / sparsity sweep over t, the
  zero share per layer.
* Gradients (notebook 02): the quantizer's forward staircase (Eq. 6) with its backward slopes (Eq. 8), and
  the scales of the toy fits.
* Data and training (notebook 03): image grids, accuracy and loss curves, grouped bars.
* Evolution (notebook 04): Wp and Wn per layer, the shares of negative / zero / positive weights and the
  latent-weight histograms over the epochs (the paper's Fig. 3).

The numbers come from :mod:`ttq_lib.course.threshold_stats` and :mod:`ttq_lib.training.history`.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ..thresholds import DEFAULT_T, threshold_twn
from ..training.history import layer_names, layer_series
from .threshold_stats import region_shares, threshold_sweep

REGION_COLORS = {"neg": "tab:blue", "zero": "0.7", "pos": "tab:red"}


def integer_epoch_ticks(*axes) -> None:
    """Epochs are whole numbers: ticks only at integers (matplotlib would put them at 0.5, 1.5 for short runs)."""
    from matplotlib.ticker import MaxNLocator

    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def layer_colorbar(axes, names: Sequence[str], cmap: str = "viridis", label: str = "ternary layer"):
    """A colour bar for lines coloured by layer depth (first layer dark, last yellow), ticked with the first,
    middle and last layer's names."""
    import matplotlib.pyplot as plt
    from matplotlib.colors import Normalize

    n = max(1, len(names) - 1)
    sm = plt.cm.ScalarMappable(norm=Normalize(0, n), cmap=cmap)
    axes = list(axes) if isinstance(axes, (list, tuple)) or hasattr(axes, "flat") else [axes]
    bar = axes[0].figure.colorbar(sm, ax=axes, pad=0.01, label=label)
    ticks = sorted({0, n // 2, n})
    bar.set_ticks(ticks, labels=[names[i] for i in ticks] if names else [])
    bar.ax.tick_params(labelsize=7)
    return bar


def _ax(ax, figsize=(7, 3.5)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_threshold_histogram(w: torch.Tensor, delta: torch.Tensor | float, ax=None, twn_delta=None,
                             bins: int = 80, title: str | None = None, log: bool = False):
    """Histogram of ``w`` coloured by region (negative / zero / positive) with the threshold at
    ``±delta`` (solid) and, if given, TWN's ``±0.7 mean|w|`` (dashed); the legend gives the shares."""
    import numpy as np

    ax = _ax(ax)
    values = w.detach().double().flatten().cpu().numpy()
    d = float(delta)
    counts, edges = np.histogram(values, bins=bins)
    centers = (edges[:-1] + edges[1:]) / 2
    shares = region_shares(w.detach(), d)
    colors = [REGION_COLORS["neg"] if c < -d else REGION_COLORS["pos"] if c > d else REGION_COLORS["zero"]
              for c in centers]
    ax.bar(centers, counts, width=edges[1] - edges[0], color=colors, log=log)
    for name in ("neg", "zero", "pos"):
        ax.bar([0], [0], color=REGION_COLORS[name], label=f"{name}: {100 * shares[name]:.1f} %")
    ax.axvline(-d, color="k", lw=1.2)
    ax.axvline(d, color="k", lw=1.2, label=f"±δ = ±{d:.4f}")
    if twn_delta is not None:
        td = float(twn_delta)
        ax.axvline(-td, color="k", ls="--", lw=1)
        ax.axvline(td, color="k", ls="--", lw=1, label=f"TWN ±0.7·mean|w| = ±{td:.4f}")
    ax.set_xlabel("latent weight w")
    ax.set_ylabel("count")
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title)
    return ax


def plot_threshold_sweep(w: torch.Tensor, t: float = DEFAULT_T, ax=None, sweep: dict | None = None):
    """Best ternary error (left axis) and zero share (right axis) against t; marks t and TWN's rule."""
    ax = _ax(ax)
    sweep = sweep or threshold_sweep(w)
    ax.plot(sweep["t"], sweep["error"], color="tab:purple", label="relative L2 error")
    ax.set_xlabel("t  (threshold = t · max|w|)")
    ax.set_ylabel("relative L2 error", color="tab:purple")
    ax2 = ax.twinx()
    ax2.plot(sweep["t"], sweep["zero"], color="0.4", ls=":", label="zero share")
    ax2.set_ylabel("share of zeros", color="0.4")
    ax2.set_ylim(0, 1)
    wmax = float(w.detach().abs().max())
    t_twn = float(threshold_twn(w)) / wmax
    ax.axvline(t, color="k", lw=1, label=f"paper t = {t:g}")
    ax.axvline(t_twn, color="k", ls="--", lw=1, label=f"TWN ≙ t = {t_twn:.3f}")
    handles, labels = (sum(z, []) for z in zip(ax.get_legend_handles_labels(), ax2.get_legend_handles_labels()))
    ax.legend(handles, labels, fontsize=8, loc="upper center")  # one legend, the zero-share curve included
    return ax


def plot_layer_sparsity(rows: Sequence[dict], other: Sequence[dict] | None = None,
                        labels: tuple[str, str] = ("TTQ t = 0.05", "TWN 0.7·mean|w|"), ax=None):
    """Zero share per layer (``layer_stats`` rows), optionally next to a second rule's."""
    import numpy as np

    ax = _ax(ax, (9, 3.5))
    x = np.arange(len(rows))
    width = 0.4 if other else 0.8
    ax.bar(x - (width / 2 if other else 0), [r["zero"] for r in rows], width, label=labels[0])
    if other:
        ax.bar(x + width / 2, [r["zero"] for r in other], width, label=labels[1])
    ax.set_xticks(x, [r["name"] for r in rows], rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("share of zeros")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8)
    return ax


def plot_quantizer(wp: float, wn: float, delta: float, ax=None, span: float = 1.0):
    """The forward rule q(w) of Eq. 6 (a staircase) and the slopes the backward rule Eq. 8 uses."""
    ax = _ax(ax, (6, 3.5))
    ax.plot([-span, -delta, -delta, delta, delta, span], [-wn, -wn, 0, 0, wp, wp], lw=2, label="q(w)  (Eq. 6)")
    for x0, x1, slope, name in ((-span, -delta, wn, "Wn"), (-delta, delta, 1.0, "1"), (delta, span, wp, "Wp")):
        mid = (x0 + x1) / 2
        y0 = -wn if x1 <= -delta else wp if x0 >= delta else 0.0
        dx = 0.12 * span
        ax.plot([mid - dx, mid + dx], [y0 - slope * dx, y0 + slope * dx], color="tab:orange", lw=1.5)
        ax.annotate(f"slope {name}", (mid, y0 + slope * dx), textcoords="offset points", xytext=(0, 6),
                    ha="center", fontsize=8, color="tab:orange")
    ax.axhline(0, color="0.8", lw=0.8)
    ax.axvline(0, color="0.8", lw=0.8)
    ax.set_xlabel("latent weight w")
    ax.set_ylabel("ternary weight q")
    ax.set_title("forward: a staircase; backward (orange): the scaled straight-through slopes", fontsize=9)
    return ax


def plot_toy_fit(fits: dict[str, dict], targets: tuple[float, float] | None = None, axes=None):
    """Wp and Wn against the step for one or several :func:`fit_ternary_toy` results (one panel each)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, len(fits), figsize=(5 * len(fits), 3.2), squeeze=False)
        axes = axes[0]
    for ax, (label, fit) in zip(axes, fits.items()):
        ax.plot(fit["step"], fit["wp"], color="tab:red", label="Wp")
        ax.plot(fit["step"], fit["wn"], color="tab:blue", label="Wn")
        if targets:
            ax.axhline(targets[0], color="tab:red", ls=":", lw=1, label=f"best Wp ≈ {targets[0]:g}")
            ax.axhline(targets[1], color="tab:blue", ls=":", lw=1, label=f"best Wn ≈ {targets[1]:g}")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("gradient step")
        ax.set_ylabel("scale value")
        ax.legend(fontsize=8)
    return axes


def image_grid(x: torch.Tensor, ncols: int = 8, pad: int = 2, fill: int = 255) -> torch.Tensor:
    """Tile uint8 ``[N, 3, H, W]`` images into one ``[rows*(H+pad)-pad, cols*(W+pad)-pad, 3]`` uint8 array
    (row-major, ``fill`` between tiles)."""
    n, c, h, w = x.shape
    nrows = max(1, math.ceil(n / ncols))
    grid = torch.full((nrows * (h + pad) - pad, ncols * (w + pad) - pad, c), fill, dtype=torch.uint8)
    for i in range(n):
        r, k = divmod(i, ncols)
        grid[r * (h + pad):r * (h + pad) + h, k * (w + pad):k * (w + pad) + w] = x[i].permute(1, 2, 0).cpu()
    return grid


def show_images(x: torch.Tensor, y: torch.Tensor | None = None, classes: Sequence[str] | None = None,
                ncols: int = 8, ax=None, size: float = 0.9):
    """uint8 ``[N, 3, H, W]`` images in one tiled picture, with their class names (or labels) under them.

    One image instead of a subplot per picture keeps the notebook small.
    """
    n, _, h, w = x.shape
    nrows = max(1, math.ceil(n / ncols))
    label_space = 0.25 if y is not None else 0.0
    ax = _ax(ax, (size * ncols, (size + label_space) * nrows))
    pad = 2 if y is None else 12
    grid = image_grid(x, ncols, pad=2)
    if y is not None:  # room for a label under each row of images
        rows = [grid[r * (h + 2):r * (h + 2) + h] for r in range(nrows)]
        blank = torch.full((pad, grid.shape[1], 3), 255, dtype=torch.uint8)
        grid = torch.cat([torch.cat([row, blank]) for row in rows])
    ax.imshow(grid.numpy(), interpolation="nearest")
    ax.axis("off")
    if y is not None:
        for i in range(n):
            r, k = divmod(i, ncols)
            label = int(y[i])
            ax.text(k * (w + 2) + w / 2, r * (h + pad) + h + pad / 2, classes[label] if classes else str(label),
                    ha="center", va="center", fontsize=7)
    return ax


def plot_histories(histories: dict[str, Sequence[dict]], paper: dict[str, float] | None = None, axes=None,
                   start_acc: dict[str, float] | None = None):
    """Test accuracy and training loss against the epoch for several runs (``history.jsonl`` rows);
    ``paper`` maps a label to an accuracy drawn as a horizontal line; ``start_acc`` maps a run's label to its
    test accuracy before training, drawn at epoch 0 (the history starts after the first epoch)."""
    import matplotlib.pyplot as plt

    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.5))
    for label, hist in histories.items():
        epochs = [r["epoch"] for r in hist]
        accs = [r["test_acc"] for r in hist]
        if start_acc and label in start_acc:
            epochs_acc, accs = [0] + epochs, [start_acc[label]] + accs
        else:
            epochs_acc = epochs
        axes[0].plot(epochs_acc, accs, marker="o", ms=3, label=label)
        axes[1].plot(epochs, [r["train_loss"] for r in hist], marker="o", ms=3, label=label)
    for i, (label, acc) in enumerate((paper or {}).items()):
        axes[0].axhline(acc, color="k", ls=(":", "--", "-.")[i % 3], lw=1, label=label)
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].set_ylabel("training loss")
    for ax in axes:
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
    integer_epoch_ticks(*axes)
    return axes


def plot_grouped_bars(groups: dict[str, dict[str, float]], ax=None, ylabel: str = "", fmt: str = "{:.1f}"):
    """Bars for ``{group: {series: value}}``, one colour per series, values written on the bars."""
    import numpy as np

    ax = _ax(ax)
    names = list(groups)
    series = list(dict.fromkeys(s for g in groups.values() for s in g))
    width = 0.8 / len(series)
    for j, s in enumerate(series):
        xs = np.arange(len(names)) + (j - (len(series) - 1) / 2) * width
        vals = [groups[g].get(s, float("nan")) for g in names]
        bars = ax.bar(xs, vals, width, label=s)
        for b, v in zip(bars, vals):
            if not math.isnan(v):
                ax.annotate(fmt.format(v), (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(np.arange(len(names)), names, fontsize=9)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    return ax


def plot_scales(history: Sequence[dict], start: dict | None = None, axes=None, cmap: str = "viridis"):
    """Wp (left) and Wn (right) of every ternary layer against the epoch, coloured by depth (colour bar)."""
    import matplotlib.pyplot as plt

    rows = ([start] if start else []) + list(history)
    names = layer_names(rows)
    if axes is None:
        _, axes = plt.subplots(1, 2, figsize=(11, 3.6), sharey=True)
    colors = plt.get_cmap(cmap)
    for i, name in enumerate(names):
        c = colors(i / max(1, len(names) - 1))
        for ax, key in zip(axes, ("wp", "wn")):
            xs, ys = layer_series(rows, name, key)
            ax.plot(xs, ys, color=c, lw=1.2)
    for ax, key in zip(axes, ("Wp", "Wn")):
        ax.set_title(f"{key} per layer", fontsize=10)
        ax.set_xlabel("epoch")
    axes[0].set_ylabel("scale")
    integer_epoch_ticks(*axes)
    layer_colorbar(list(axes), names, cmap)
    return axes


def plot_shares(history: Sequence[dict], layers: dict[str, str], start: dict | None = None, axes=None):
    """Stacked shares of negative / zero / positive weights against the epoch, one panel per layer
    (``layers`` maps a title to a layer name; the name "*" stands for all ternary layers together)."""
    import matplotlib.pyplot as plt

    rows = ([start] if start else []) + list(history)
    if axes is None:
        _, axes = plt.subplots(1, len(layers), figsize=(3.6 * len(layers), 3.2), sharey=True, squeeze=False)
        axes = axes[0]
    for ax, (role, name) in zip(axes, layers.items()):
        xs, neg = layer_series(rows, name, "neg")
        _, zero = layer_series(rows, name, "zero")
        _, pos = layer_series(rows, name, "pos")
        ax.stackplot(xs, neg, zero, pos, colors=[REGION_COLORS[k] for k in ("neg", "zero", "pos")],
                     labels=["negative", "zero", "positive"])
        ax.set_title(f"{role}\n{'all ternary layers' if name == '*' else name}", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylim(0, 1)
        ax.set_xlim(xs[0], xs[-1])
    integer_epoch_ticks(*axes)
    axes[0].set_ylabel("share of weights")
    axes[-1].legend(fontsize=8, loc="lower right")
    return axes


def plot_hist_evolution(history: Sequence[dict], layer: str, epochs: Sequence[int], t: float = DEFAULT_T,
                        start: dict | None = None, ax=None, log: bool = True):
    """The latent-weight histograms (w / max|w| over [-1, 1], the ``hist`` field) of one layer at several
    epochs, with the threshold lines at ±t."""
    import numpy as np

    ax = _ax(ax, (7, 3.5))
    rows = {r["epoch"]: r for r in ([start] if start else []) + list(history)}
    for e in epochs:
        if e not in rows or layer not in rows[e].get("hist", {}):
            continue
        counts = np.asarray(rows[e]["hist"][layer], dtype=float)
        edges = np.linspace(-1, 1, len(counts) + 1)
        ax.stairs(counts, edges, label=f"epoch {e}", lw=1.4)
    ax.axvline(-t, color="k", lw=1)
    ax.axvline(t, color="k", lw=1, label=f"±t = ±{t:g}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("latent weight / max|w|")
    ax.set_ylabel("count")
    ax.set_title(layer, fontsize=10)
    ax.legend(fontsize=8)
    return ax


def markdown_table(rows: Sequence[dict], columns: dict[str, str], formats: dict[str, str] | None = None) -> str:
    """A GitHub markdown table: ``columns`` maps header -> row key, ``formats`` header -> format spec.

    ``None`` values print as an en dash; numbers are right-aligned; a ``|`` inside a cell is escaped.
    """
    formats = formats or {}
    esc = lambda text: str(text).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in columns) + " |"]
    aligns = []
    for header, key in columns.items():
        numeric = any(isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool) for r in rows)
        aligns.append("---:" if numeric else "---")
    lines.append("|" + "|".join(aligns) + "|")
    for r in rows:
        cells = []
        for header, key in columns.items():
            v = r.get(key)
            cells.append("–" if v is None else esc(format(v, formats.get(header, ""))))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
