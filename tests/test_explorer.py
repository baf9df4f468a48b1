"""ttq_lib.course.explorer: the threshold explorer of notebook 01, driven headlessly."""
import matplotlib
import pytest
import torch

import ttq_lib
from ttq_lib.course import explorer, threshold_stats

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

pytest.importorskip("ipywidgets")


@pytest.fixture()
def weight():
    return torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(0))


def test_initial_state_follows_the_paper_rule(weight):
    ex = explorer.threshold_explorer(weight, t=0.05, draw=False)
    assert ex.mode.value == "t"
    assert ex.threshold == float(ttq_lib.threshold_max(weight, 0.05))
    assert ex.shares == threshold_stats.region_shares(weight, ex.threshold)
    assert ex.twn_threshold == pytest.approx(float(ttq_lib.threshold_twn(weight)))


def test_t_slider_updates_threshold_shares_and_error(weight):
    ex = explorer.threshold_explorer(weight, t=0.05, draw=False)
    before, updates = dict(ex.shares), ex.updates
    ex.t_slider.value = 0.2
    assert ex.updates > updates
    assert ex.threshold == float(ttq_lib.threshold_max(weight, 0.2))
    assert ex.shares == threshold_stats.region_shares(weight, ex.threshold)
    assert ex.shares["zero"] > before["zero"]
    assert sum(ex.shares.values()) == pytest.approx(1.0)
    assert ex.error == pytest.approx(threshold_stats.ternary_error(weight, ex.threshold))
    assert (ex.wp, ex.wn) == threshold_stats.region_means(weight.flatten(), ex.threshold)
    assert f"{ex.threshold:.4f}" in ex.summary.value


def test_r_slider_switches_to_the_sparsity_rule(weight):
    ex = explorer.threshold_explorer(weight, t=0.05, r=0.4, draw=False)
    ex.r_slider.value = 0.3
    assert ex.mode.value == "r"
    assert ex.threshold == float(ttq_lib.threshold_sparsity(weight, 0.3))
    assert ex.shares["zero"] == pytest.approx(0.3, abs=1.0 / weight.numel())
    ex.r_slider.value = 0.0  # binary: nothing is zero
    assert ex.threshold == 0.0 and ex.shares["zero"] == 0.0


def test_mode_toggle_and_back(weight):
    ex = explorer.threshold_explorer(weight, t=0.1, r=0.5, draw=False)
    ex.mode.value = "r"
    assert ex.threshold == float(ttq_lib.threshold_sparsity(weight, 0.5))
    ex.t_slider.value = 0.15  # moving the t slider selects the t rule again
    assert ex.mode.value == "t"
    assert ex.threshold == float(ttq_lib.threshold_max(weight, 0.15))


def test_drawing_fills_the_output_and_leaks_no_figures(weight):
    plt.close("all")
    ex = explorer.threshold_explorer(weight, name="test layer", draw=True)
    ex.t_slider.value = 0.08
    assert plt.get_fignums() == []
    assert len(ex.output.outputs) == 1 and ex.output.outputs[0]["output_type"] == "display_data"
    assert ex.widget.children[-1] is ex.output
    assert ex.t_slider in ex.widget.children[1].children and ex.r_slider in ex.widget.children[1].children


def test_bad_arguments_are_refused(weight):
    with pytest.raises(ValueError, match="mode"):
        explorer.threshold_explorer(weight, mode="x", draw=False)
    with pytest.raises(ValueError, match="empty"):
        explorer.threshold_explorer(torch.empty(0), draw=False)
