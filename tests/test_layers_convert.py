"""Ternary layers and the model converter, on our ResNets, torchvision's resnet18 and an AlexNet-shaped net."""
import pytest
import torch
import torch.nn as nn
import torchvision

from ttq_lib import (TernaryConv2d, TernaryLinear, clamp_scales_, layer_stats, resnet20, resnet56, 
                     ternarize_model, ternary_layers)


def test_resnet20_converts_18_layers_keeping_first_conv_and_linear():
    m = ternarize_model(resnet20())
    names = [n for n, _ in ternary_layers(m)]
    assert len(names) == 18
    assert "conv1" not in names and "linear" not in names
    assert type(m.conv1) is nn.Conv2d and type(m.linear) is nn.Linear


def test_switches_quantize_first_and_last():
    m = ternarize_model(resnet20(), keep_first=False, keep_last=False)
    assert len(ternary_layers(m)) == 20
    assert isinstance(m.conv1, TernaryConv2d) and isinstance(m.linear, TernaryLinear)


def test_resnet56_count():
    assert len(ternary_layers(ternarize_model(resnet56()))) == 54


def test_torchvision_resnet18():
    m = ternarize_model(torchvision.models.resnet18(num_classes=10))
    names = [n for n, _ in ternary_layers(m)]
    # 16 block convs + 3 downsample 1x1 convs; conv1 and fc stay full precision
    assert len(names) == 19
    assert "conv1" not in names and "fc" not in names and "layer2.0.downsample.0" in names
    out = m(torch.randn(2, 3, 64, 64))
    out.sum().backward()
    assert m.layer1[0].conv1.wp.grad is not None


def test_alexnet_layer_pattern():
    # torchvision's AlexNet pattern (convs with ReLU and max-pooling, adaptive pooling, dropout, three linear
    # layers) at a size that runs in milliseconds: the first conv and the last linear stay full precision.
    features = nn.Sequential(nn.Conv2d(3, 8, 5, stride=2, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(8, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(12, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 12, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
    classifier = nn.Sequential(nn.Dropout(), nn.Linear(12 * 2 * 2, 32), nn.ReLU(), nn.Dropout(),
                               nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 10))
    m = ternarize_model(nn.Sequential(features, nn.AdaptiveAvgPool2d(2), nn.Flatten(), classifier))
    names = [n for n, _ in ternary_layers(m)]
    assert names == ["0.3", "0.6", "0.8", "0.10", "3.1", "3.4"]
    out = m.eval()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)
    out.sum().backward()
    assert all(layer.wp.grad is not None for _, layer in ternary_layers(m))


def test_latent_weights_copied_and_forward_uses_ternary_values():
    fp = resnet20()
    m = ternarize_model(resnet20().requires_grad_(False))
    m.load_state_dict(fp.state_dict(), strict=False)  # wp, wn absent from fp
    conv = m.layer1[0].conv1
    assert torch.equal(conv.weight, fp.layer1[0].conv1.weight)
    vals = set(conv.quantized_weight().unique().tolist())
    assert vals <= {1.0, 0.0, -1.0}


def test_converted_weights_equal_source_weights():
    fp = resnet20()
    ref = {k: v.clone() for k, v in fp.state_dict().items()}
    m = ternarize_model(fp)
    for name, layer in ternary_layers(m):
        assert torch.equal(layer.weight, ref[name + ".weight"])


def test_mean_init_uses_region_magnitudes():
    m = ternarize_model(resnet20(), scale_init="mean")
    conv = m.layer2[1].conv2
    w, d = conv.weight.detach(), conv.threshold()
    assert conv.wp.item() == pytest.approx(w[w > d].mean().item(), rel=1e-5)
    assert conv.wn.item() == pytest.approx(-w[w < -d].mean().item(), rel=1e-5)


def test_layer_stats_shares_sum_to_one_and_match_codes():
    m = ternarize_model(resnet20())
    rows = layer_stats(m)
    assert len(rows) == 18
    for r in rows:
        assert r["neg"] + r["zero"] + r["pos"] == pytest.approx(1.0)
        assert r["wp"] == 1.0 and r["wn"] == 1.0
    conv = m.layer3[2].conv2
    row = next(r for r in rows if r["name"] == "layer3.2.conv2")
    assert row["threshold"] == pytest.approx(0.05 * conv.weight.abs().max().item())
    assert row["zero"] == pytest.approx((conv.weight.abs() <= row["threshold"]).float().mean().item())


def test_twn_layers_report_alpha_twice():
    m = ternarize_model(resnet20(), method="twn")
    assert not hasattr(m.layer1[0].conv1, "wp")
    r = layer_stats(m)[0]
    assert r["wp"] == r["wn"] > 0


def test_clamp_keeps_scales_positive():
    m = ternarize_model(resnet20())
    with torch.no_grad():
        m.layer1[0].conv1.wp.fill_(-0.3)
    clamp_scales_(m)
    assert m.layer1[0].conv1.wp.item() == pytest.approx(1e-4)


def test_convert_twice_is_refused():
    m = ternarize_model(resnet20())
    with pytest.raises(ValueError, match="already has ternary layers"):
        ternarize_model(m)


def test_unknown_method_rejected():
    with pytest.raises(ValueError, match="method"):
        ternarize_model(resnet20(), method="bwn")
