"""ttq_lib.course.explorer: the threshold explorer of notebook 01, driven headlessly."""
import matplotlib
import pytest
import torch

from ttq_lib.course import explorer

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

pytest.importorskip("ipywidgets")


@pytest.fixture()
def weight():
    return torch.randn(32, 16, 3, 3, generator=torch.Generator().manual_seed(0))


@pytest.fixture()
def ramp():
    """-2.00, -1.99, ..., 2.00 (401 values, shuffled): every threshold and share can be worked by hand."""
    values = torch.arange(-200, 201, dtype=torch.float64) / 100
    return values[torch.randperm(401, generator=torch.Generator().manual_seed(1))].float()


def test_initial_state_follows_the_paper_rule(ramp):
    ex = explorer.threshold_explorer(ramp, t=0.05, draw=False)
    assert ex.mode.value == "t"
    # delta = t * max|w| = 0.05 * 2 = 0.1; |w| <= 0.1 holds for -0.10 ... 0.10: 21 of 401 values
    assert ex.threshold == pytest.approx(0.1)
    assert ex.shares == pytest.approx({"neg": 190 / 401, "zero": 21 / 401, "pos": 190 / 401})
    # the best scale is the mean of 0.11 ... 2.00 = 1.055 on both sides
    assert (ex.wp, ex.wn) == pytest.approx((1.055, 1.055))
    # TWN: 0.7 * mean|w|, and mean|w| = 2 * (0.01 + 0.02 + ... + 2.00) / 401 = 402 / 401
    assert ex.twn_threshold == pytest.approx(0.7 * 402 / 401)


def test_t_slider_updates_threshold_shares_and_error(ramp):
    ex = explorer.threshold_explorer(ramp, t=0.05, draw=False)
    updates = ex.updates
    ex.t_slider.value = 0.5  # delta = 1.0: -1.00 ... 1.00 become zero
    assert ex.updates > updates
    assert ex.threshold == pytest.approx(1.0)
    assert ex.shares == pytest.approx({"neg": 100 / 401, "zero": 201 / 401, "pos": 100 / 401})
    assert (ex.wp, ex.wn) == pytest.approx((1.505, 1.505))  # mean of 1.01 ... 2.00
    # ||w - q||^2: the zeros contribute sum w^2 over |w| <= 1, the rest (w - 1.505)^2
    w = torch.arange(-200, 201, dtype=torch.float64) / 100
    q = torch.where(w > 1, 1.505, torch.where(w < -1, -1.505, 0.0))
    assert ex.error == pytest.approx(float((w - q).norm() / w.norm()), rel=1e-6)
    assert f"{ex.threshold:.4f}" in ex.summary.value


def test_r_slider_switches_to_the_sparsity_rule(ramp):
    ex = explorer.threshold_explorer(ramp, t=0.05, r=0.4, draw=False)
    ex.r_slider.value = 0.3
    assert ex.mode.value == "r"
    # the 0.3-quantile of |w|: the 120th smallest of 0, 0.01, 0.01, 0.02, 0.02, ... is 0.60
    assert ex.threshold == pytest.approx(0.6)
    assert ex.shares["zero"] == pytest.approx(121 / 401)  # -0.60 ... 0.60
    ex.r_slider.value = 0.0  # binary: nothing is zero
    assert ex.threshold == 0.0 and ex.shares["zero"] == pytest.approx(1 / 401)  # only w = 0 itself


def test_mode_toggle_and_back_keeps_the_other_slider_in_sync(ramp):
    ex = explorer.threshold_explorer(ramp, t=0.1, r=0.5, draw=False)
    # t = 0.1: delta = 0.2, zero: -0.20 ... 0.20 = 41 of 401 values; the r slider follows (not its 0.5)
    assert ex.threshold == pytest.approx(0.2) and ex.r_slider.value == pytest.approx(41 / 401)
    assert ex.mode.value == "t"  # following does not switch the rule
    ex.mode.value = "r"  # the 41/401-quantile of |w| is 0.20 again: the same regions
    assert ex.threshold == pytest.approx(0.2) and ex.shares["zero"] == pytest.approx(41 / 401)
    ex.r_slider.value = 0.5  # the median of |w|: the 200th smallest value
    assert ex.threshold == pytest.approx(1.0)
    assert ex.t_slider.value == pytest.approx(0.5)  # 1.0 / max|w| = 1.0 / 2.0
    ex.t_slider.value = 0.15  # moving the t slider selects the t rule again
    assert ex.mode.value == "t"
    assert ex.threshold == pytest.approx(0.3) and ex.r_slider.value == pytest.approx(61 / 401)
    ex.r_slider.value = 0.0  # binary; t cannot follow to 0 and stops at its minimum
    assert ex.threshold == 0.0 and ex.t_slider.value == pytest.approx(explorer.T_RANGE[0])


def test_layer_dropdown_switches_the_weights(ramp):
    layers = {"ramp": ramp, "half": ramp / 2}
    ex = explorer.threshold_explorer(layers, t=0.25, draw=False)
    assert ex.layer.options == ("ramp", "half") and ex.name == "ramp"
    assert ex.threshold == pytest.approx(0.5)  # 0.25 * 2.0
    ex.layer.value = "half"  # the same t on weights half as large: half the threshold, the same shares
    assert ex.weight.abs().max() == pytest.approx(1.0)
    assert ex.threshold == pytest.approx(0.25) and ex.shares["zero"] == pytest.approx(101 / 401)
    assert ex.twn_threshold == pytest.approx(0.7 * float(ramp.abs().mean()) / 2)
    ex.mode.value = "r"
    ex.r_slider.value = 0.3
    ex.layer.value = "ramp"  # the rule and its slider stay; the threshold is the new layer's 0.3-quantile
    assert ex.mode.value == "r" and ex.threshold == pytest.approx(0.6)
    with pytest.raises(ValueError, match="layer 'nope'"):
        explorer.threshold_explorer(layers, layer="nope", draw=False)


def test_layer_weights_lists_convs_and_linears_in_order():
    from ttq_lib.models import resnet20

    names = list(explorer.layer_weights(resnet20()))
    assert len(names) == 20 and names[0] == "conv1" and names[-1] == "linear"
    assert names[1] == "layer1.0.conv1"


def test_save_image_writes_a_png_of_the_current_state(ramp, tmp_path):
    plt.close("all")
    ex = explorer.threshold_explorer(ramp, t=0.05, draw=False)
    out = tmp_path / "explorer.png"
    ex.save_image(out)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
    assert plt.get_fignums() == []


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
