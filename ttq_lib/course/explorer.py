"""The threshold explorer of notebook 01: a layer dropdown and ipywidgets sliders on t and on the sparsity r.

Moving a slider re-thresholds the chosen layer's weights (``t * max|w|`` or the r-quantile of |w|, paper
Sec. 3), recomputes the region shares, the least-squares scales and the relative error
(:mod:`ttq_lib.course.threshold_stats`), moves the other slider to the same threshold (so both always describe
the regions shown) and redraws the histogram and the error sweep (:mod:`ttq_lib.course.plots`).  The state is
plain attributes, so a test or a later cell can drive an explorer without a browser; a notebook's checks drive
a second, headless one (``draw=False``), so the displayed one stays where the text says.
:meth:`ThresholdExplorer.save_image` draws the same view into a PNG for readers without a kernel (GitHub
shows no widgets).  ipywidgets is imported when an explorer is built.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
import torch.nn as nn

from ..thresholds import DEFAULT_T, check_weight, threshold_max, threshold_sparsity, threshold_twn
from .plots import plot_threshold_histogram, plot_threshold_sweep
from .threshold_stats import region_means, region_shares, ternary_error, threshold_sweep

T_RANGE, R_RANGE = (0.005, 0.6), (0.0, 0.95)


def layer_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    """``{name: weight}`` of every Conv2d and Linear layer of ``model``, in model order (the dropdown's list)."""
    return {n: m.weight.detach() for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}


class ThresholdExplorer:
    """A layer dropdown and sliders on t and on the sparsity r that re-threshold that layer and redraw it.

    ``weights`` is one tensor or a ``{layer name: tensor}`` mapping (:func:`layer_weights`); ``layer`` picks
    the first one shown.  Moving a slider selects its rule (``mode`` "t": ``t * max|w|``, "r": the r-quantile
    of |w|) and calls :meth:`update`, which sets the state a test or a later cell can read:

    * ``threshold``: the threshold of the selected rule (``ttq_lib.threshold_max`` / ``threshold_sparsity``);
    * ``shares``: ``{"neg", "zero", "pos"}``; ``wp``, ``wn``: the least-squares scales (region means);
    * ``error``: the relative L2 error of that best ternary approximation; ``twn_threshold`` for comparison;

    and moves the inactive slider to the same threshold: the r slider to the zero share, the t slider to
    ``threshold / max|w|`` (each clamped to its range), without switching the rule.

    Widgets: ``layer`` (Dropdown), ``mode`` (ToggleButtons), ``t_slider`` and ``r_slider`` (FloatSliders whose
    readout box takes a typed value), ``summary`` (an HTML line with the numbers), ``output`` (the figure),
    all in ``widget``.  ``draw=False`` skips the figure (headless use).
    """

    def __init__(self, weights: torch.Tensor | Mapping[str, torch.Tensor], t: float = DEFAULT_T, r: float = 0.4,
                 mode: str = "t", name: str = "", draw: bool = True, bins: int = 80, layer: str | None = None):
        import ipywidgets as widgets

        if isinstance(weights, torch.Tensor):
            weights = {name or "weight": weights}
        if not weights:
            raise ValueError("weights is empty: pass a tensor or {layer name: tensor}, e.g. layer_weights(model)")
        for key, w in weights.items():
            check_weight(w)
        self.weights = {k: w.detach().float().flatten().cpu() for k, w in weights.items()}
        layer = next(iter(self.weights)) if layer is None else layer
        if layer not in self.weights:
            raise ValueError(f"layer {layer!r} is not one of {list(self.weights)}")
        if mode not in ("t", "r"):
            raise ValueError(f"mode={mode!r} is not 't' or 'r'")
        self.draw, self.bins = draw, bins
        self.updates = 0
        self._syncing = False
        self.layer = widgets.Dropdown(options=list(self.weights), value=layer, description="layer")
        self.t_slider = widgets.FloatSlider(value=t, min=T_RANGE[0], max=T_RANGE[1], step=0.005, description="t",
                                            readout_format=".3f", continuous_update=False)
        self.r_slider = widgets.FloatSlider(value=r, min=R_RANGE[0], max=R_RANGE[1], step=0.01,
                                            description="sparsity r", readout_format=".2f", continuous_update=False)
        self.mode = widgets.ToggleButtons(options=[("t · max|w|", "t"), ("sparsity r", "r")], value=mode,
                                          description="rule")
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox([widgets.HBox([self.layer, self.mode]),
                                    widgets.HBox([self.t_slider, self.r_slider]), self.summary, self.output])
        self._load_layer()
        self.t_slider.observe(self._slider_moved("t"), names="value")
        self.r_slider.observe(self._slider_moved("r"), names="value")
        self.mode.observe(lambda change: self._unless_syncing(), names="value")
        self.layer.observe(lambda change: (self._load_layer(), self.update()), names="value")
        self.update()

    @property
    def name(self) -> str:
        return self.layer.value

    def _load_layer(self) -> None:
        self.weight = self.weights[self.layer.value]
        self.twn_threshold = float(threshold_twn(self.weight))
        self.sweep = threshold_sweep(self.weight)

    def _unless_syncing(self) -> None:
        if not self._syncing:
            self.update()

    def _slider_moved(self, mode: str):
        def handler(change):
            if self._syncing:
                return  # update() itself moved this slider to follow the other rule
            if self.mode.value != mode:
                self.mode.value = mode  # its own observer calls update()
            else:
                self.update()
        return handler

    def update(self) -> None:
        """Recompute the state from the layer, the rule and its slider; sync the other slider; redraw."""
        wmax = float(self.weight.abs().max())
        if self.mode.value == "t":
            d = threshold_max(self.weight, self.t_slider.value)
            rule = f"δ = t·max|w| = {self.t_slider.value:.3f} · {wmax:.4f}"
        else:
            d = threshold_sparsity(self.weight, self.r_slider.value)
            rule = f"δ = the {self.r_slider.value:.2f}-quantile of |w|"
        self.threshold = float(d)
        self.shares = region_shares(self.weight, d)
        self.wp, self.wn = region_means(self.weight, d)
        self.error = ternary_error(self.weight, d)
        self.updates += 1
        self._syncing = True
        try:  # the inactive slider shows the same threshold in its own terms
            if self.mode.value == "t":
                self.r_slider.value = min(max(self.shares["zero"], R_RANGE[0]), R_RANGE[1])
            else:
                self.t_slider.value = min(max(self.threshold / wmax, T_RANGE[0]), T_RANGE[1]) if wmax > 0 else T_RANGE[0]
        finally:
            self._syncing = False
        s = self.shares
        self.summary.value = (
            f"<b>{rule} = {self.threshold:.4f}</b> &nbsp; shares: negative {100 * s['neg']:.1f} %, "
            f"zero {100 * s['zero']:.1f} %, positive {100 * s['pos']:.1f} % &nbsp; best scales "
            f"Wp = {self.wp:.4f}, Wn = {self.wn:.4f} &nbsp; relative L2 error {self.error:.4f}")
        if self.draw:
            self._redraw()

    def figure(self, figsize=(12, 3.5)):
        """The explorer's two panels (histogram with thresholds, error sweep with the current point)."""
        import matplotlib.pyplot as plt

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=figsize)
        plot_threshold_histogram(self.weight, self.threshold, ax1, self.twn_threshold, bins=self.bins,
                                 title=self.name or None)
        plot_threshold_sweep(self.weight, ax=ax2, sweep=self.sweep)
        t_now = self.threshold / float(self.weight.abs().max())
        ax2.plot([t_now], [self.error], "o", color="tab:purple", ms=8)
        fig.tight_layout()
        return fig

    def _redraw(self) -> None:
        """Draw the figure and put it into ``output``'s state directly.

        Setting ``output.outputs`` (rather than ``with output: display(fig)``) sends nothing to the cell that
        moved the slider, so a notebook that drives the explorer from code has the same cell outputs live,
        under nbconvert and under nbval.
        """
        import matplotlib.pyplot as plt
        from IPython import get_ipython

        fig = self.figure()
        shell = get_ipython()
        if shell is not None:
            data, metadata = shell.display_formatter.format(fig)
        else:
            data, metadata = {"text/plain": repr(fig)}, {}
        plt.close(fig)
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)

    def save_image(self, path, dpi: int = 90) -> None:
        """Write a PNG of the explorer as it stands: its controls as text above the two panels (atomically)."""
        import matplotlib.pyplot as plt

        from ..formats.atomic import atomic_path

        fig = self.figure(figsize=(12, 4.3))
        fig.subplots_adjust(top=0.72)
        rule = "t · max|w|" if self.mode.value == "t" else "sparsity r"
        controls = (f"layer [{self.name} ▾]     rule [{rule}]     "
                    f"t ──●── {self.t_slider.value:.3f}     sparsity r ──●── {self.r_slider.value:.2f}")
        summary = re.sub(r"<[^>]+>", "", self.summary.value).replace("&nbsp;", " ")
        fig.text(0.01, 0.97, controls, fontsize=10, family="monospace", va="top")
        fig.text(0.01, 0.90, summary, fontsize=8.5, va="top")
        fig.text(0.01, 0.84, "(a static picture of the explorer: run the notebook with a kernel to move it)",
                 fontsize=8, color="0.4", va="top")
        try:
            with atomic_path(path) as tmp:
                fig.savefig(tmp, format="png", dpi=dpi)
        finally:
            plt.close(fig)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def threshold_explorer(weights: torch.Tensor | Mapping[str, torch.Tensor], t: float = DEFAULT_T, r: float = 0.4,
                       mode: str = "t", name: str = "", draw: bool = True,
                       layer: str | None = None) -> ThresholdExplorer:
    """Build a :class:`ThresholdExplorer` (show it by leaving it last in a notebook cell)."""
    return ThresholdExplorer(weights, t=t, r=r, mode=mode, name=name, draw=draw, layer=layer)


if __name__ == "__main__":  # python -m ttq_lib.course.explorer OUT.png: the static image notebook 01 shows
    import sys

    import matplotlib

    matplotlib.use("Agg")
    from ..formats.loading import load_model
    from .workbook import pretrained_checkpoint

    model, _ = load_model(pretrained_checkpoint())
    threshold_explorer(layer_weights(model), layer="layer2.1.conv1", draw=False).save_image(sys.argv[1])
    print(f"wrote {sys.argv[1]}")
