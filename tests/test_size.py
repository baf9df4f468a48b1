"""size_report against numbers computed by hand."""

import math

import matplotlib
import pytest
import torch
import torch.nn as nn

from ttq_lib import resnet20, ternarize_model
from ttq_lib.layers import TernaryLinear
from ttq_lib.formats import load_packed, save_packed
from ttq_lib.formats.size import FORMATS, size_report, ternary_entropy_bits

matplotlib.use("Agg")


def _known_model():
    """Linear(4->16, full, bias) -> TernaryLinear(16->8, no bias) with 50 % zeros, 25 % +, 25 % - ->
    BatchNorm1d(8)."""
    tern = TernaryLinear(16, 8, bias=False, t=0.05)
    w = torch.zeros(128)
    w[:32] = 1.0
    w[32:64] = -1.0  # threshold 0.05 * max|w| = 0.05: the 64 zeros stay zero
    with torch.no_grad():
        tern.weight.copy_(w[torch.randperm(128)].view(8, 16))
    return nn.Sequential(nn.Linear(4, 16), tern, nn.BatchNorm1d(8))


def test_entropy_of_balanced_half_zeros_is_1_5_bits():
    assert ternary_entropy_bits(0.25, 0.5, 0.25) == pytest.approx(1.5)
    assert ternary_entropy_bits(1 / 3, 1 / 3, 1 / 3) == pytest.approx(math.log2(3))
    assert ternary_entropy_bits(0.0, 1.0, 0.0) == 0.0
    with pytest.raises(ValueError, match="sum to 1"):
        ternary_entropy_bits(0.5, 0.5, 0.5)


def test_rows_match_hand_computation():
    report = size_report(_known_model())
    full, tern, bn = report.rows
    assert full == {"name": "0", "kind": "full", "params": 80, "buffers": 0, "fp32": 320, "fp16": 160,
                    "int8": 80, "2bit": 320, "base3": 320, "entropy": 320}
    assert tern["name"] == "1" and tern["kind"] == "ternary" and tern["params"] == 128
    assert (tern["fp32"], tern["fp16"], tern["int8"]) == (512, 256, 128)
    assert tern["2bit"] == 128 // 4 + 8             # 32 bytes of codes + Wp, Wn
    assert tern["base3"] == math.ceil(128 / 5) + 8  # 26 + 8
    assert tern["entropy"] == 128 * 3 // 2 // 8 + 8  # 1.5 bits/weight -> 24 + 8
    assert (tern["p_neg"], tern["p_zero"], tern["p_pos"]) == (0.25, 0.5, 0.25)
    assert tern["entropy_bits"] == pytest.approx(1.5)
    # BatchNorm1d(8): weight + bias are parameters, running mean + var are buffers; all count at fp32.
    assert (bn["params"], bn["buffers"], bn["fp32"], bn["base3"]) == (16, 16, 128, 128)


def test_totals_and_ratios():
    report = size_report(_known_model())
    t = report.totals
    assert t["ternary"]["fp32"] == 512 and t["ternary"]["base3"] == 34
    assert t["full"]["fp32"] == 320 + 128
    assert t["model"]["fp32"] == 512 + 448 and t["model"]["2bit"] == 40 + 448
    assert report.ratios["ternary"]["2bit"] == pytest.approx(512 / 40)
    assert report.ratios["model"]["entropy"] == pytest.approx(960 / (32 + 448))
    assert report.ratios["model"]["fp16"] == pytest.approx(2.0)


def test_full_precision_model_has_no_ternary_ratio():
    report = size_report(resnet20())
    assert all(r["kind"] == "full" for r in report.rows)
    assert report.totals["model"]["params"] == 269_722  # ResNet-20's well-known 0.27 M
    assert report.ratios["ternary"]["base3"] is None
    assert report.ratios["model"]["base3"] == pytest.approx(1.0)


def test_resnet20_ternary_ratio_and_packed_model_agree(tmp_path):
    torch.manual_seed(0)
    model = ternarize_model(resnet20(), scale_init="mean")
    report = size_report(model)
    assert sum(r["kind"] == "ternary" for r in report.rows) == 18
    assert report.ratios["ternary"]["2bit"] == pytest.approx(16, rel=0.01)  # 2 bits + two scalars
    assert report.ratios["ternary"]["base3"] > 19
    packed, _ = load_packed(save_packed(model, tmp_path / "p.safetensors"))
    assert size_report(packed).rows == report.rows


def test_text_markdown_and_plot():
    report = size_report(_known_model())
    text = str(report)
    assert "ternary" in text and "total model" in text and "12.80x" in text
    # Every row (and rule) under the title has the same width: the columns are aligned.
    assert len({len(ln) for ln in text.splitlines()[1:]}) == 1
    md = report.to_markdown()
    assert md.splitlines()[0].startswith("| layer | kind | params")
    assert all(f in md.splitlines()[0] for f in FORMATS)
    assert "**total model**" in md
    ax = report.plot()
    assert [t.get_text() for t in ax.get_xticklabels()] == list(FORMATS)
