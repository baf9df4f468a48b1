"""The committed runs under results/ still load and still score what their metrics.json recorded.

The runs README compares (FP, TTQ, TWN on the CPU, and the reproduction plan's runs in results/cifar10/) are
evaluated on the full shared test split, the learning-rate search's runs on the held-out training images they
were scored on; a few images of slack cover another thread count changing the summation order of a borderline
logit.  Every other
committed checkpoint must load as what its metrics say and classify a stratified 1,000-image subset far above
chance; the packed file must make exactly its source checkpoint's predictions.
"""
import json
from pathlib import Path

import pytest
import torch

from ttq_lib import load_model
from ttq_lib.training.evaluate import accuracy, predict_logits

RESULTS = Path(__file__).resolve().parent.parent / "results"
FINISHED = sorted(p.parent for p in RESULTS.glob("*/*/metrics.json"))
FULL_SPLIT = {"cpu-resnet20/fp", "cpu-resnet20/ttq", "cpu-resnet20/twn"}
SLACK = 0.03  # percentage points: 3 of 10,000 images


@pytest.fixture(scope="module")
def test_split(cifar):
    return cifar.test_x, cifar.test_y


@pytest.fixture(scope="module")
def test_subset(cifar):
    sub = cifar.subset(0, 1000)
    return sub.test_x, sub.test_y


def test_there_are_committed_runs():
    assert len(FINISHED) >= 4


def _name(run: Path) -> str:
    return f"{run.parent.name}/{run.name}"


@pytest.mark.parametrize("run", FINISHED, ids=_name)
def test_committed_checkpoint_scores_its_recorded_accuracy(run, request):
    metrics = json.loads((run / "metrics.json").read_text())
    model, meta = load_model(run / "last.safetensors", metrics["model"])
    assert meta["method"] == metrics["method"]
    if metrics.get("eval_split") == "holdout":  # a search run: its held-out training images, never the test split
        held = request.getfixturevalue("cifar").holdout(metrics["holdout_images"], seed=metrics["holdout_seed"])
        got = accuracy(model, held.test_x, held.test_y, meta["mean"], meta["std"])
        assert got == pytest.approx(metrics["holdout_accuracy"], abs=SLACK)
    elif _name(run) in FULL_SPLIT or run.parent.name == "cifar10":  # the runs README's tables are made of
        got = accuracy(model, *request.getfixturevalue("test_split"), meta["mean"], meta["std"])
        assert got == pytest.approx(metrics["test_accuracy"], abs=SLACK)
    else:
        got = accuracy(model, *request.getfixturevalue("test_subset"), meta["mean"], meta["std"])
        assert got > 70.0  # 10 % is chance; every committed run scored above 85 % on the full split


@pytest.mark.parametrize("packed", sorted(RESULTS.glob("*/*/packed-*.safetensors")), ids=lambda p: p.name)
def test_committed_packed_file_equals_its_checkpoint(packed, test_subset):
    plain, meta = load_model(packed.parent / "last.safetensors")
    small, packed_meta = load_model(packed)
    assert packed_meta["format"] == "ttq-packed"
    x, _ = test_subset
    assert torch.equal(predict_logits(small, x, packed_meta["mean"], packed_meta["std"]),
                       predict_logits(plain, x, meta["mean"], meta["std"]))
