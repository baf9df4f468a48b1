"""Notebook 06's computations (ttq_lib.course.sensitivity) on the real pretrained ResNet-20 and real CIFAR-10
test images (the shared JPEG copy); bits per weight worked out by hand for ResNet-20's layer shapes."""
import json
from pathlib import Path

import pytest
import torch

from ttq_lib.course import sensitivity as S
from ttq_lib.models import resnet20

ROOT = Path(__file__).resolve().parent.parent
# ResNet-20: 18 residual convs with 267,264 weights (6 x 16*16*9, 16*32*9 + 5 x 32*32*9, 32*64*9 + 5 x 64*64*9)
# and 672 output channels (6 x 16 + 6 x 32 + 6 x 64); the first conv (3*16*9 = 432) and the linear layer
# (64*10 = 640) stay fp32: 268,336 weights in all.
TERNARY, CHANNELS, KEPT = 267264, 672, 432 + 640
TOTAL = TERNARY + KEPT


def test_bits_per_weight_by_hand():
    m = resnet20()
    layers = S.default_layers(m)
    assert len(layers) == 18 and layers[0] == "layer1.0.conv1" and layers[-1] == "layer3.2.conv2"
    assert S.bits_per_weight(m, {}) == 32.0
    assert S.bits_per_weight(m, {n: "ttq" for n in layers}) == pytest.approx((2 * TERNARY + 64 * 18 + 32 * KEPT) / TOTAL)
    assert S.bits_per_weight(m, {n: "int8" for n in layers}) == pytest.approx(
        (8 * TERNARY + 32 * CHANNELS + 32 * KEPT) / TOTAL)   # 8.176
    every = {n: "binary" for n in S.default_layers(m, keep_first=False, keep_last=False)}
    assert S.bits_per_weight(m, every) == pytest.approx((TOTAL + 32 * 20) / TOTAL)


def test_quantize_layers_changes_only_the_named_layers():
    m = resnet20()
    q = S.quantize_layers(m, {"layer2.0.conv1": "binary"})
    assert q.get_submodule("layer2.0.conv1").weight.unique().numel() == 2
    assert torch.equal(q.get_submodule("layer2.0.conv2").weight, m.get_submodule("layer2.0.conv2").weight)
    assert m.get_submodule("layer2.0.conv1").weight.unique().numel() > 2   # the original is untouched
    with pytest.raises(ValueError, match="no conv / linear layer named layer9.conv"):
        S.quantize_layers(m, {"layer9.conv": "ttq"})
    with pytest.raises(ValueError, match="mode must be 'alone'"):
        S.layer_sensitivity(m, None, mode="one")


def test_finetuned_points_read_the_committed_runs():
    rows = {r["run"]: r for r in S.finetuned_points(ROOT)}
    assert set(rows) == set(S.FINETUNED_RUNS)
    for run, r in rows.items():
        metrics = json.loads((ROOT / "results" / run / "metrics.json").read_text())
        assert r["acc"] == metrics["test_accuracy"] and r["method"] == metrics["method"]
    # counted from the checkpoints' own ternary layers: TTQ stores two scales per layer, TWN one
    assert rows["cpu-resnet20/ttq"]["bits"] == pytest.approx((2 * TERNARY + 64 * 18 + 32 * KEPT) / TOTAL)
    assert rows["cpu-resnet20/twn"]["bits"] == pytest.approx((2 * TERNARY + 32 * 18 + 32 * KEPT) / TOTAL)


@pytest.fixture(scope="module")
def real(cifar, resnet20_th):
    import ttq_lib

    threads = torch.get_num_threads()
    torch.set_num_threads(1)   # these tests are forward passes only; one thread is faster on a shared machine
    model, meta = ttq_lib.load_model(resnet20_th)
    # 300 stratified test images; batch norm re-estimated on 128 training images
    yield model, S.EvalSet.from_data(cifar, 300, 128, meta["mean"], meta["std"])
    torch.set_num_threads(threads)


def test_scheme_points_on_real_images(real):
    model, ev = real
    rows = {r["scheme"]: r for r in S.scheme_points(model, ev, schemes=("fp", "int8", "binary"))}
    fp, int8, binary = rows["fp"], rows["int8"], rows["binary"]
    # the pretrained model scores 81.0 % on all 10,000 JPEG test images; 300 of them: within ~3 standard errors
    assert 74.0 <= fp["acc_no_recal"] <= 88.0
    # weight-only INT8 per channel changes nothing a test can see, before or after recalibration
    assert abs(int8["acc_no_recal"] - fp["acc_no_recal"]) <= 1.0
    assert abs(int8["acc"] - fp["acc"]) <= 1.0
    # binary weights collapse without recalibration (about chance) and stay far below after it
    assert binary["acc_no_recal"] <= 20.0
    assert binary["acc"] <= fp["acc"] - 25.0 and binary["acc"] > binary["acc_no_recal"]
    assert fp["bits"] == 32.0 and binary["bits"] == pytest.approx((TERNARY + 32 * 18 + 32 * KEPT) / TOTAL)


def test_layer_sensitivity_and_first_last_on_real_images(real):
    model, ev = real
    cost = {r["label"]: r for r in S.first_last_cost(model, ev, "ttq")}
    paper, everything = cost["first and last in full precision (paper)"], cost["every layer quantized"]
    all_ttq = paper["acc"]   # the 18 residual convs ternary (TTQ's rule, no training), recalibrated
    alone = S.layer_sensitivity(model, ev, "ttq", "alone", layers=["layer1.0.conv1", "layer3.2.conv2"])
    assert [r["numel"] for r in alone] == [2304, 36864]
    # one ternary layer costs far less than eighteen
    assert all(r["acc"] >= all_ttq + 15.0 for r in alone)
    kept = S.layer_sensitivity(model, ev, "ttq", "kept", layers=["layer1.0.conv1"])
    assert abs(kept[0]["acc"] - all_ttq) <= 10.0
    assert everything["bits"] == pytest.approx((2 * TOTAL + 64 * 20) / TOTAL)
    # ternarizing the 3-channel first conv as well loses accuracy
    assert everything["acc"] < paper["acc"]


def test_pareto_front_by_hand():
    from ttq_lib.course.baseline_plots import pareto_front

    pts = [{"n": "fp", "bits": 32.0, "acc": 87.0}, {"n": "int8", "bits": 8.2, "acc": 87.1},
           {"n": "int4", "bits": 4.2, "acc": 85.0}, {"n": "twn0", "bits": 2.12, "acc": 60.0},
           {"n": "ttq", "bits": 2.12, "acc": 87.3}, {"n": "bin", "bits": 1.13, "acc": 30.0}]
    # fp is beaten by int8 (fewer bits, higher accuracy), int8 and int4 by the fine-tuned ternary point;
    # at equal bits only the better of the two ternary points stays
    assert [p["n"] for p in pareto_front(pts)] == ["bin", "ttq"]
    assert [p["n"] for p in pareto_front(pts[:3])] == ["int4", "int8"]
