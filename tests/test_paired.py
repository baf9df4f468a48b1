"""Paired tests in `ttq table`: McNemar's exact test, each run's answers cached beside its checkpoint (keyed by the
checkpoint's and the test split's hashes), and the committed runs' discordant counts."""
from __future__ import annotations

import json
import re
import shutil
from math import comb
from pathlib import Path

import pytest

from ttq_lib.reproduction.paired import RunAnswers
from ttq_lib.reproduction.predictions import CACHE, PredictionsUnavailable, Predictor, read_cached
from ttq_lib.reproduction.stats import mcnemar_exact
from ttq_lib.reproduction.table import render_table, table_rows
from ttq_lib.training import TrainConfig, train

RESULTS = Path(__file__).resolve().parents[1] / "results" / "cifar10"


def test_mcnemar_exact_by_hand():
    # 3 images only the first gets right, 7 only the second: under no difference each of the 10 is a fair coin;
    # P(X <= 3) = (1 + 10 + 45 + 120) / 1024, two-sided twice that
    assert mcnemar_exact(3, 7) == pytest.approx(2 * 176 / 1024) == mcnemar_exact(7, 3)
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(4, 4) == 1.0 and mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(250, 330) == pytest.approx(2 * sum(comb(580, i) for i in range(251)) / 2 ** 580)
    with pytest.raises(ValueError, match="whole numbers"):
        mcnemar_exact(-1, 3)


@pytest.mark.parametrize("row,seed,ttq_fp,ttq_twn", [
    # the paired counts of the issue that asked for this table, measured then on the committed checkpoints
    ("ResNet-20 (fp)", 0, (284, 376, 0.0004), (309, 292, 0.51)),
    ("ResNet-20 (fp)", 1, (289, 352, 0.014), (323, 317, 0.84)),
    ("ResNet-20 (fp)", 2, (262, 372, 0.00001), (300, 310, 0.72)),
    ("ResNet-32 (fp)", 0, (248, 345, 0.00008), (292, 296, 0.90)),
    ("ResNet-44 (fp)", 0, (242, 345, 0.00002), (270, 273, 0.93)),
    ("ResNet-56 (fp)", 0, (250, 330, 0.001), (283, 309, 0.30)),
])
def test_the_committed_runs_pair_as_measured(row, seed, ttq_fp, ttq_twn):
    rows = {r["label"]: r for r in table_rows(RESULTS, answers=RunAnswers(source="missing-on-purpose"))}
    for key, (only_ttq, only_other, p) in (("ttq-fp", ttq_fp), ("ttq-twn", ttq_twn)):
        got = next(s for s in rows[row][key]["paired"]["seeds"] if s["seed"] == seed)
        assert (got["only_a"], got["only_b"]) == (only_ttq, only_other)
        assert got["p"] == pytest.approx(p, rel=0.5, abs=5e-6)  # the issue rounded p to one or two digits


def test_the_table_prints_the_paired_tests_and_a_pooled_verdict():
    text = render_table(RESULTS)
    assert "Paired on the same test images" in text
    assert re.search(r"ResNet-20 \(fp\) +pooled +835/1100, p = 1.8e-09", text)  # 284+289+262 / 376+352+372
    assert "ResNet-20 (fp): TTQ vs FP, paired: TTQ worse than FP beyond test noise" in text
    assert "TTQ vs TWN, paired: no difference beyond test noise" in text


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("paired") / "run"
    train(TrainConfig(method="fp", data="synthetic:96", epochs=1, batch_size=32, lr=0.05, out=str(out)),
          progress=False)
    return out


def test_answers_are_cached_beside_the_checkpoint_and_recomputed_when_it_changes(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    metrics = json.loads((run / "metrics.json").read_text())
    answers = Predictor("synthetic:96").correct(run, metrics)
    assert 100 * answers.mean() == pytest.approx(metrics["test_accuracy"])
    assert (read_cached(run, metrics["data_test_sha256"]) == answers).all()
    # the cache is what is read: a cached file with other answers is believed while its keys match...
    assert read_cached(run, "0" * 64) is None  # ...and not for another test split
    before = (run / CACHE).stat().st_mtime_ns
    assert (Predictor("synthetic:96").correct(run, metrics) == answers).all()
    assert (run / CACHE).stat().st_mtime_ns == before  # read, not computed again
    # another checkpoint in the folder: the cache no longer matches and is computed again
    data = (run / "last.safetensors").read_bytes()
    (run / "last.safetensors").write_bytes(data)  # same bytes: still valid
    assert read_cached(run, metrics["data_test_sha256"]) is not None
    other = tmp_path / "other"
    train(TrainConfig(method="fp", data="synthetic:96", epochs=1, batch_size=32, lr=0.05, seed=1, out=str(other)),
          progress=False)
    shutil.copy(other / "last.safetensors", run / "last.safetensors")
    assert read_cached(run, metrics["data_test_sha256"]) is None
    theirs = json.loads((other / "metrics.json").read_text())
    again = Predictor("synthetic:96").correct(run, theirs)
    assert 100 * again.mean() == pytest.approx(theirs["test_accuracy"])
    assert (read_cached(run, metrics["data_test_sha256"]) == again).all()  # the new checkpoint's, cached
    # answers that do not give the accuracy the run recorded are refused, not cached
    (run / CACHE).unlink()
    with pytest.raises(PredictionsUnavailable, match="not the one the run was scored with"):
        Predictor("synthetic:96").correct(run, {**theirs, "test_accuracy": theirs["test_accuracy"] + 7.3})
    assert not (run / CACHE).exists()


def test_answers_are_refused_on_other_data(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / CACHE).unlink(missing_ok=True)
    metrics = json.loads((run / "metrics.json").read_text())
    with pytest.raises(PredictionsUnavailable, match="point --data or \\$TTQ_DATA at the data the run was scored on"):
        Predictor("synthetic:200").correct(run, metrics)


def test_a_run_on_made_up_data_is_paired_on_the_data_it_names(tiny_run, tmp_path):
    """A run that recorded 'synthetic:96' is recomputed on that, never on the CIFAR-10 the resolver finds."""
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / CACHE).unlink(missing_ok=True)
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["data"] == "synthetic:96"
    answers = Predictor().correct(run, metrics)
    assert 100 * answers.mean() == pytest.approx(metrics["test_accuracy"])
