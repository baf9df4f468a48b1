"""Each finished run's answer on every test image, computed once per checkpoint and kept beside it, so that
``ttq table`` can pair two runs image by image (McNemar's test, :func:`~ttq_lib.reproduction.stats.mcnemar_exact`).

``<run>/test_predictions.safetensors`` holds the predicted class of each test image, in the test split's order,
and whether it was right, with the SHA-256 of the checkpoint and of the test split they come from: a file whose
checkpoint or data no longer match is computed again.  Reading one needs numpy only; computing one loads the
model and the test split (found by the input resolver, and refused unless it is the split the run was scored
on), and checks that the answers give the accuracy the run recorded (within :data:`TOLERANCE`).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.fetch import sha256_of
from ..data.inputs import KNOWN_TEST_SPLITS
from ..formats import atomic_path
from .plan_results import data_name

CACHE = "test_predictions.safetensors"
#: How far (points) the answers' accuracy may lie from the run's recorded one: evaluated here on a CPU, a run
#: scored on a GPU flips a few borderline images (ResNet-20 TTQ seed 2: 87.56 % here, 87.50 % on the H100).
TOLERANCE = 0.2
FORMAT = "ttq-test-predictions"


class PredictionsUnavailable(ValueError):
    """A run's predictions can be neither read nor computed here (say why, and what to do)."""


def read_cached(folder: Path, test_sha256: str) -> np.ndarray | None:
    """Whether each test image was answered right (bool array), from the run's cache; None when there is none
    or it belongs to another checkpoint or test split."""
    from safetensors import safe_open

    path = folder / CACHE
    if not path.is_file():
        return None
    with safe_open(str(path), "numpy") as f:
        meta = f.metadata() or {}
        if meta.get("format") != FORMAT or meta.get("test_sha256") != test_sha256 \
                or meta.get("checkpoint_sha256") != sha256_of(folder / "last.safetensors"):
            return None
        return f.get_tensor("correct").astype(bool)


def test_split_of(metrics: dict) -> str | None:
    """The SHA-256 of the test split a run was scored on: recorded, or (runs written before it was) that of the
    known copy its data name says (the accuracy check when computing then confirms it)."""
    if metrics.get("data_test_sha256"):
        return metrics["data_test_sha256"]
    known = {name: sha for sha, name in KNOWN_TEST_SPLITS.items()}
    return known.get(data_name(metrics))


class Predictor:
    """Computes predictions of runs scored on one test split, loading that split once (on first need)."""

    def __init__(self, source: str | os.PathLike | None = None):
        self.source, self._data = source, {}

    def test_data(self, test_sha256: str, run: Path, recorded: str | None = None):
        """The test split ``run`` was scored on: from ``source``, a made-up one the run recorded by name
        (``synthetic:N``), else the input resolver's CIFAR-10 (never a download); each loaded once."""
        from ..data.inputs import InputUnavailable, resolve_data
        from ..data.sources import load_cifar10

        source = self.source
        if source is None and str(recorded or "").startswith("synthetic"):
            source = recorded
        if source not in self._data:
            try:
                self._data[source] = load_cifar10(resolve_data(source, download=False).value)
            except InputUnavailable as e:
                raise PredictionsUnavailable(f"{run} has no {CACHE} and no CIFAR-10 is here to compute it: {e}") \
                    from None
        data = self._data[source]
        if data.test_sha256 != test_sha256:
            raise PredictionsUnavailable(
                f"{run} was scored on a test split with SHA-256 {test_sha256[:12]}..., the data found here "
                f"({data.name}, {data.source}) has {data.test_sha256[:12]}...: point --data or "
                "$TTQ_DATA at the data the run was scored on")
        return data

    def correct(self, folder: Path, metrics: dict) -> np.ndarray:
        """The run's answers (right or not), from its cache or computed now and cached."""
        test_sha256 = test_split_of(metrics)
        if not test_sha256:
            raise PredictionsUnavailable(f"{folder}/metrics.json does not record its test split's SHA-256 and "
                                         f"names no known copy ({data_name(metrics)}): its answers cannot be "
                                         "paired with another run's")
        cached = read_cached(folder, test_sha256)
        if cached is not None:
            return cached
        data = self.test_data(test_sha256, folder, metrics.get("data"))
        predicted = _predict(folder / "last.safetensors", data.test_x)
        right = (predicted == data.test_y).numpy()
        recorded = metrics.get("test_accuracy")
        if recorded is not None and abs(100.0 * right.mean() - recorded) > TOLERANCE:
            raise PredictionsUnavailable(
                f"{folder}: its checkpoint scores {100.0 * right.mean():.2f} % on this test split, but the run "
                f"recorded {recorded:.2f} %: the checkpoint is not the one the run was scored with")
        _write(folder, predicted.numpy().astype(np.uint8), right, test_sha256)
        return right


def _predict(checkpoint: Path, images, batch_size: int = 500):
    """The predicted class of each image, on the CPU in channels_last (its faster layout there; the answers of
    the committed runs are the same in either)."""
    import torch

    from ..data.batches import normalize
    from ..formats import load_model

    model, meta = load_model(checkpoint)
    model.eval()
    layout = torch.channels_last
    model.to(memory_format=layout)
    with torch.no_grad():
        return torch.cat([model(normalize(images[i:i + batch_size], meta["mean"], meta["std"])
                                .contiguous(memory_format=layout)).argmax(1)
                          for i in range(0, len(images), batch_size)])


def _write(folder: Path, predicted: np.ndarray, right: np.ndarray, test_sha256: str) -> None:
    from safetensors.numpy import save_file

    meta = {"format": FORMAT, "test_sha256": test_sha256,
            "checkpoint_sha256": sha256_of(folder / "last.safetensors")}
    with atomic_path(folder / CACHE) as tmp:
        save_file({"predicted": predicted, "correct": right.astype(np.uint8)}, str(tmp), metadata=meta)
