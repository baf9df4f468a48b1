"""The threshold explorer of notebook 01: ipywidgets sliders on t and on the sparsity r.

Moving a slider re-thresholds one weight tensor (``t * max|w|`` or the r-quantile of |w|, paper Sec. 3),
recomputes the region shares, the least-squares scales and the relative error
(:mod:`ttq_lib.course.threshold_stats`), and redraws the histogram and the error sweep
(:mod:`ttq_lib.course.plots`).  The state is plain attributes, so a
test or a later cell can drive it without a browser.  ipywidgets is imported when an explorer is built.
"""
from __future__ import annotations

import torch

from ..thresholds import DEFAULT_T, check_weight, threshold_max, threshold_sparsity, threshold_twn
from .plots import plot_threshold_histogram, plot_threshold_sweep
from .threshold_stats import region_means, region_shares, ternary_error, threshold_sweep


class ThresholdExplorer:
    """Sliders on t and on the sparsity r that re-threshold one weight tensor and redraw its histogram.

    Moving a slider selects its rule (``mode`` "t": ``t * max|w|``, "r": the r-quantile of |w|) and calls
    :meth:`update`, which sets the state a test or a later cell can read:

    * ``threshold``: the threshold of the selected rule (``ttq_lib.threshold_max`` / ``threshold_sparsity``);
    * ``shares``: ``{"neg", "zero", "pos"}``; ``wp``, ``wn``: the least-squares scales (region means);
    * ``error``: the relative L2 error of that best ternary approximation; ``twn_threshold`` for comparison.

    ``widget`` is the ipywidgets box (displaying the explorer shows it); ``output`` holds the figure and
    ``summary`` an HTML line with the numbers.  ``draw=False`` skips the figure (headless tests).
    """

    def __init__(self, weight: torch.Tensor, t: float = DEFAULT_T, r: float = 0.4, mode: str = "t",
                 name: str = "", draw: bool = True, bins: int = 80):
        import ipywidgets as widgets

        check_weight(weight)
        if mode not in ("t", "r"):
            raise ValueError(f"mode={mode!r} is not 't' or 'r'")
        self.weight = weight.detach().float().flatten().cpu()
        self.name, self.draw, self.bins = name, draw, bins
        self.twn_threshold = float(threshold_twn(self.weight))
        self.sweep = threshold_sweep(self.weight)
        self.updates = 0
        self.t_slider = widgets.FloatSlider(value=t, min=0.005, max=0.6, step=0.005, description="t",
                                            readout_format=".3f", continuous_update=False)
        self.r_slider = widgets.FloatSlider(value=r, min=0.0, max=0.95, step=0.01, description="sparsity r",
                                            readout_format=".2f", continuous_update=False)
        self.mode = widgets.ToggleButtons(options=[("t · max|w|", "t"), ("sparsity r", "r")], value=mode,
                                          description="rule")
        self.summary = widgets.HTML()
        self.output = widgets.Output()
        self.widget = widgets.VBox([self.mode, widgets.HBox([self.t_slider, self.r_slider]), self.summary,
                                    self.output])
        self.t_slider.observe(self._slider_moved("t"), names="value")
        self.r_slider.observe(self._slider_moved("r"), names="value")
        self.mode.observe(lambda change: self.update(), names="value")
        self.update()

    def _slider_moved(self, mode: str):
        def handler(change):
            if self.mode.value != mode:
                self.mode.value = mode  # its own observer calls update()
            else:
                self.update()
        return handler

    def update(self) -> None:
        """Recompute the state from the sliders and the rule, then refresh the summary and the figure."""
        if self.mode.value == "t":
            d = threshold_max(self.weight, self.t_slider.value)
            rule = f"δ = t·max|w| = {self.t_slider.value:.3f} · {float(self.weight.abs().max()):.4f}"
        else:
            d = threshold_sparsity(self.weight, self.r_slider.value)
            rule = f"δ = the {self.r_slider.value:.2f}-quantile of |w|"
        self.threshold = float(d)
        self.shares = region_shares(self.weight, d)
        self.wp, self.wn = region_means(self.weight, d)
        self.error = ternary_error(self.weight, d)
        self.updates += 1
        s = self.shares
        self.summary.value = (
            f"<b>{rule} = {self.threshold:.4f}</b> &nbsp; shares: negative {100 * s['neg']:.1f} %, "
            f"zero {100 * s['zero']:.1f} %, positive {100 * s['pos']:.1f} % &nbsp; best scales "
            f"Wp = {self.wp:.4f}, Wn = {self.wn:.4f} &nbsp; relative L2 error {self.error:.4f}")
        if self.draw:
            self._redraw()

    def _redraw(self) -> None:
        """Draw the figure and put it into ``output``'s state directly.

        Setting ``output.outputs`` (rather than ``with output: display(fig)``) sends nothing to the cell that
        moved the slider, so a notebook that drives the explorer from code has the same cell outputs live,
        under nbconvert and under nbval.
        """
        import matplotlib.pyplot as plt
        from IPython import get_ipython

        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 3.5))
        plot_threshold_histogram(self.weight, self.threshold, ax1, self.twn_threshold, bins=self.bins,
                                 title=self.name or None)
        plot_threshold_sweep(self.weight, ax=ax2, sweep=self.sweep)
        t_now = self.threshold / float(self.weight.abs().max())
        ax2.plot([t_now], [self.error], "o", color="tab:purple", ms=8)
        fig.tight_layout()
        shell = get_ipython()
        if shell is not None:
            data, metadata = shell.display_formatter.format(fig)
        else:
            data, metadata = {"text/plain": repr(fig)}, {}
        plt.close(fig)
        self.output.outputs = ({"output_type": "display_data", "data": data, "metadata": metadata},)

    def _ipython_display_(self) -> None:
        from IPython.display import display

        display(self.widget)


def threshold_explorer(weight: torch.Tensor, t: float = DEFAULT_T, r: float = 0.4, mode: str = "t",
                       name: str = "", draw: bool = True) -> ThresholdExplorer:
    """Build a :class:`ThresholdExplorer` on ``weight`` (show it by leaving it last in a notebook cell)."""
    return ThresholdExplorer(weight, t=t, r=r, mode=mode, name=name, draw=draw)
