"""ttq_lib.course.plots: every figure draws (headless), and the markdown table."""
import matplotlib
import pytest
import torch

import ttq_lib
from ttq_lib.course import baseline_plots, evolution_plots, gradient_aids, plots

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_markdown_table():
    rows = [{"a": "x", "b": 1.23456, "c": None}, {"a": "y", "b": 2.0, "c": 3}]
    text = plots.markdown_table(rows, {"name": "a", "value": "b", "other": "c"}, {"value": ".2f"})
    assert text.splitlines() == ["| name | value | other |", "|---|---:|---:|",
                                 "| x | 1.23 | – |", "| y | 2.00 | 3 |"]
    assert plots.markdown_table([{"a": "max|w|"}], {"rule": "a"}).splitlines()[-1] == "| max\\|w\\| |"


def test_plot_functions_draw(history_rows):
    w = torch.randn(1000, generator=torch.Generator().manual_seed(3))
    d = ttq_lib.threshold_max(w, 0.05)
    plots.plot_threshold_histogram(w, d, twn_delta=ttq_lib.threshold_twn(w), title="t")
    plots.plot_threshold_sweep(w)
    stats = [{"name": "a", "zero": 0.3}, {"name": "b", "zero": 0.5}]
    plots.plot_layer_sparsity(stats, stats)
    plots.plot_quantizer(1.2, 0.8, 0.05)
    toy = gradient_aids.toy_target(n=100)
    axes = plots.plot_toy_fit({"a": gradient_aids.fit_ternary_toy(toy["w"], toy["y"], steps=3)}, targets=(1.5, 0.5))
    assert len(axes) == 1
    x = torch.randint(0, 256, (5, 3, 32, 32), dtype=torch.uint8)
    plots.show_images(x, torch.arange(5), ncols=3)
    plots.show_images(x, ncols=8)
    grid = plots.image_grid(x, ncols=3, pad=2)
    assert grid.shape == (2 * 34 - 2, 3 * 34 - 2, 3) and torch.equal(grid[:32, 34:66], x[1].permute(1, 2, 0))
    h = history_rows
    plots.plot_histories({"run": h}, paper={"paper": 91.0})
    plots.plot_grouped_bars({"g1": {"a": 1.0, "b": 2.0}, "g2": {"a": 3.0}}, ylabel="%")
    plots.plot_scales(h)
    plots.plot_shares(h, {"first": "layer1.0.conv1", "all": "*"})
    ax = plots.plot_hist_evolution(h, "layer1.0.conv1", [1, 3, 99], t=0.05)
    assert len(ax.get_legend().get_texts()) == 3  # epochs 1, 3 and the threshold line; 99 is skipped


def test_evolution_and_baseline_plots_draw(history_rows):
    h = history_rows
    start = {"epoch": 0, "layers": h[0]["layers"], "hist": h[0]["hist"]}
    ax = evolution_plots.plot_accuracy_gap({"ttq": h}, reference_acc=90.0, paper_gap=0.64)
    assert all(float(x).is_integer() for x in ax.get_xticks())   # integer epoch ticks
    assert evolution_plots.accuracy_gap(h, 90.0)[1] == [90.0 - r["test_acc"] for r in h]
    evolution_plots.plot_scale_ratio(h, start=start)
    last = h[-1]["epoch"]
    change = evolution_plots.histogram_change(h, "layer1.0.conv1", last, start)
    assert change == [a - b for a, b in zip(h[-1]["hist"]["layer1.0.conv1"], h[0]["hist"]["layer1.0.conv1"])]
    evolution_plots.plot_histogram_change(h, "layer1.0.conv1", [last], start, t=0.05)
    with pytest.raises(ValueError, match="no epoch 99"):
        evolution_plots.histogram_change(h, "layer1.0.conv1", 99, start)
    pts = [{"scheme": "fp", "label": "fp", "bits": 32.0, "acc": 87.0, "acc_no_recal": 87.0},
           {"scheme": "ttq", "label": "ttq", "bits": 2.12, "acc": 50.0, "acc_no_recal": 10.0}]
    baseline_plots.plot_pareto(pts, [{"label": "TTQ fine-tuned", "bits": 2.12, "acc": 87.3}])
    rows = [{"layer": "a", "numel": 100, "acc": 80.0}, {"layer": "b", "numel": 1000, "acc": 70.0}]
    axes = baseline_plots.plot_layer_sensitivity(rows, rows, reference={"fp": 87.0})
    assert len(axes) == 2
