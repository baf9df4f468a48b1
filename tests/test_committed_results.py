"""The committed runs under results/ still load and still score what their metrics.json recorded.

Scored in full (the images their accuracy was measured on): the plan's ResNet-20 seed-0 runs and the two search
runs whose learning rates the plan took; a few images of slack cover another thread count changing the summation
order of a borderline logit.  Every other committed run (the plan's other seeds and depths, the other search
runs, the earlier single runs) is scored on a stratified
1,000-image sample of the same images and must land within 5 points of its recorded accuracy (the sample's
standard error is about 1 point): a wrong or damaged checkpoint fails, and the suite stays within its time as runs
are added.  Each metrics.json must also agree with the last row of its history.jsonl.  The packed file must make
exactly its source checkpoint's predictions.

Models are scored in channels_last, the layout CPU training evaluates in (and 1.4x faster here than NCHW); the
summation order it changes is within the slack.
"""
import json
from pathlib import Path

import pytest
import torch

from ttq_lib import load_model
from ttq_lib.training.evaluate import accuracy, predict_logits
from ttq_lib.training.history import read_history

RESULTS = Path(__file__).resolve().parent.parent / "results"
FINISHED = sorted(p.parent for p in RESULTS.glob("*/*/metrics.json"))
IN_FULL = {"cifar10/resnet20-adapt-s0", "cifar10/resnet20-ttq-s0", "cifar10/resnet20-twn-s0",
           "cifar10-lr-search/resnet20-ttq-lr0.1-scalelr0.001-s0", "cifar10-lr-search/resnet20-twn-lr0.02-s0"}
SLACK = 0.03  # percentage points: 3 of 10,000 images
SAMPLE, SAMPLE_SLACK = 1000, 5.0  # images, points: about 5 standard errors of a 1,000-image sample


@pytest.fixture(scope="module")
def test_subset(cifar):
    sub = cifar.subset(0, 1000)
    return sub.test_x, sub.test_y


def test_there_are_committed_runs():
    assert len(FINISHED) >= 4
    assert IN_FULL <= {_name(run) for run in FINISHED}  # a renamed run must not drop out of the full scoring


_HELD: dict = {}


def _holdout(cifar, n: int, seed: int):
    if (n, seed) not in _HELD:  # holdout() copies the 45,000 other training images: once, not per run
        _HELD[n, seed] = cifar.holdout(n, seed=seed)
    return _HELD[n, seed]


def _name(run: Path) -> str:
    return f"{run.parent.name}/{run.name}"


@pytest.mark.parametrize("run", FINISHED, ids=_name)
def test_committed_checkpoint_scores_its_recorded_accuracy(run, request):
    metrics = json.loads((run / "metrics.json").read_text())
    model, meta = load_model(run / "last.safetensors", metrics["model"])
    model.to(memory_format=torch.channels_last)
    assert meta["method"] == metrics["method"]
    cifar = request.getfixturevalue("cifar")
    if metrics.get("eval_split") == "holdout":  # a search run: its held-out training images, never the test split
        images, key = _holdout(cifar, metrics["holdout_images"], metrics["holdout_seed"]), "holdout_accuracy"
    else:
        images, key = cifar, "test_accuracy"
    last = read_history(run)[-1]
    assert last["holdout_acc" if key == "holdout_accuracy" else "test_acc"] == metrics[key]
    if _name(run) in IN_FULL:
        got = accuracy(model, images.test_x, images.test_y, meta["mean"], meta["std"])
        assert got == pytest.approx(metrics[key], abs=SLACK)
    else:
        sample = images.subset(0, SAMPLE)  # the test images only: no copy of the 50,000 training images
        got = accuracy(model, sample.test_x, sample.test_y, meta["mean"], meta["std"])
        assert abs(got - metrics[key]) < SAMPLE_SLACK, (got, metrics[key])


@pytest.mark.parametrize("packed", sorted(RESULTS.glob("*/*/packed-*.safetensors")), ids=lambda p: p.name)
def test_committed_packed_file_equals_its_checkpoint(packed, test_subset):
    plain, meta = load_model(packed.parent / "last.safetensors")
    small, packed_meta = load_model(packed)
    assert packed_meta["format"] == "ttq-packed"
    x, _ = test_subset
    assert torch.equal(predict_logits(small, x, packed_meta["mean"], packed_meta["std"]),
                       predict_logits(plain, x, meta["mean"], meta["std"]))
