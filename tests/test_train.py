"""Training: a real short run on shared images, exact resume, the schedule, and bad arguments."""
import json

import pytest
import torch
from safetensors.torch import load_file

from ttq_lib.cli import main
from ttq_lib.data import normalize, synthetic_cifar10
from ttq_lib.formats import load_model
from ttq_lib.training import TrainConfig, accuracy, build, learning_rate, param_groups, train


def small_cfg(tmp_path, name, **kw):
    base = dict(model="resnet20", method="ttq", epochs=2, batch_size=32, lr=0.05, schedule="cosine",
                train_subset=96, test_subset=64, threads=1, out=str(tmp_path / name))
    base.update(kw)
    return TrainConfig(**base)


def test_real_short_training_history(tmp_path, cifar, resnet20_th):
    cfg = small_cfg(tmp_path, "real", start_from=str(resnet20_th), epochs=1, train_subset=384, test_subset=256,
                    lr=0.01, data="shared")
    metrics = train(cfg, progress=False, data=cifar)
    hist = [json.loads(l) for l in (tmp_path / "real" / "history.jsonl").read_text().splitlines()]
    assert len(hist) == 1
    layers = hist[0]["layers"]
    assert len(layers) == 18
    for row in layers:
        assert row["neg"] + row["zero"] + row["pos"] == pytest.approx(1.0)
        assert row["wp"] > 0 and row["wn"] > 0
    # Wp, Wn started at 1.0 and were trained
    assert any(abs(r["wp"] - 1.0) > 1e-4 for r in layers)
    assert set(hist[0]["hist"]) == {r["name"] for r in layers}
    assert sum(hist[0]["hist"]["layer1.0.conv1"]) == 16 * 16 * 9
    for key in ("model", "method", "epochs", "test_accuracy", "checkpoint", "command", "git_commit",
                "torch_version", "machine", "wall_time_s"):
        assert key in metrics
    # ternarizing collapses the pretrained model (batch-norm statistics no longer match); 12 steps already
    # lift it clearly above where it starts on the same test images
    start, norm = build(cfg)
    sub = cifar.subset(384, 256, seed=cfg.seed)
    untrained = accuracy(start, sub.test_x, sub.test_y, norm["mean"], norm["std"])
    assert metrics["test_accuracy"] > untrained + 5
    assert metrics == json.loads((tmp_path / "real" / "metrics.json").read_text())


def test_interrupted_run_resumes_to_same_weights(tmp_path, monkeypatch):
    import ttq_lib.training.loop as tr

    data = synthetic_cifar10(200, 64)
    full = train(small_cfg(tmp_path, "full", epochs=3), progress=False, data=data)

    # the same run killed during epoch 2 (after its training steps, before its checkpoint) ...
    real_accuracy, calls = tr.accuracy, []

    def killed_in_epoch_2(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_accuracy(*args, **kw)

    monkeypatch.setattr(tr, "accuracy", killed_in_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        train(small_cfg(tmp_path, "part", epochs=3), progress=False, data=data)
    monkeypatch.setattr(tr, "accuracy", real_accuracy)
    assert [json.loads(l)["epoch"] for l in (tmp_path / "part" / "history.jsonl").read_text().splitlines()] == [1]
    assert not (tmp_path / "part" / "metrics.json").exists()

    # ... and resumed: it ends with exactly the uninterrupted run's weights
    train(small_cfg(tmp_path, "part", epochs=3), resume=True, progress=False, data=data)
    a = load_file(str(tmp_path / "full" / "last.safetensors"))
    b = load_file(str(tmp_path / "part" / "last.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    hist = (tmp_path / "part" / "history.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in hist] == [1, 2, 3]
    assert full["test_accuracy"] == json.loads((tmp_path / "part" / "metrics.json").read_text())["test_accuracy"]


def test_resume_without_state_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing to resume"):
        train(small_cfg(tmp_path, "none"), resume=True, progress=False, data=synthetic_cifar10(64, 32))


def test_step_schedule_is_the_official_recipe():
    # the official CIFAR script: lr 0.1, divided by 10 at epochs 82, 123 and 150
    cfg = TrainConfig()
    lrs = [learning_rate(cfg, e, s, 391) for e, s in ((0, 0), (81, 390), (82, 0), (122, 390), (123, 0), (150, 0))]
    assert lrs == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.0001])


def test_threshold_factor_is_resolved_per_method():
    ttq, twn = TrainConfig(method="ttq"), TrainConfig(method="twn")
    ttq.validate()
    twn.validate()
    assert (ttq.t, twn.t) == (0.05, None)  # the paper's t for TTQ; TWN's rule has no t
    with pytest.raises(ValueError, match="does not apply to TWN"):
        TrainConfig(method="twn", t=0.1).validate()
    model, _ = build(TrainConfig(method="twn"))
    assert model.layer1[0].conv1.t is None


def test_cosine_schedule_ends_near_zero():
    cfg = TrainConfig(schedule="cosine", epochs=10, lr=0.02)
    assert learning_rate(cfg, 0, 0, 100) == pytest.approx(0.02)
    assert learning_rate(cfg, 5, 0, 100) == pytest.approx(0.01)
    assert learning_rate(cfg, 9, 99, 100) < 1e-5


def test_scales_are_decayed_only_on_request():
    model, _ = build(TrainConfig())
    ids = lambda group: {id(p) for p in group["params"]}
    decayed = ids(param_groups(model, TrainConfig())[0])
    assert id(model.layer1[0].conv1.wp) not in decayed and id(model.layer1[0].conv1.weight) in decayed
    assert id(model.bn1.weight) not in decayed
    decayed = ids(param_groups(model, TrainConfig(decay_scales=True))[0])
    assert id(model.layer1[0].conv1.wp) in decayed


@pytest.mark.parametrize("args,message", [
    (["--t", "1.5"], "outside (0, 1)"),
    (["--sparsity", "1.0"], "outside [0, 1)"),
    (["--epochs", "0"], "at least 1"),
    (["--lr", "-1"], "must be positive"),
    (["--start-from", "no/such/file.th"], "does not exist"),
    (["--init", "no/such/file.th"], "--start-from no/such/file.th does not exist"),
])
def test_bad_arguments_are_clear_errors(tmp_path, capsys, args, message):
    rc = main(["train", "--data", "synthetic", "--out", str(tmp_path / "x")] + args)
    assert rc == 2
    assert message in capsys.readouterr().err


def test_missing_data_source_is_clear(tmp_path, capsys):
    rc = main(["train", "--data", str(tmp_path / "nowhere"), "--epochs", "1", "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "nowhere" in capsys.readouterr().err


def test_eval_json_last_line(tmp_path, capsys):
    cfg = small_cfg(tmp_path, "ev", epochs=1, data="synthetic:64", train_subset=None, test_subset=None)
    train(cfg, progress=False, data=synthetic_cifar10(64, 32))
    rc = main(["eval", str(tmp_path / "ev" / "last.safetensors"), "--data", "synthetic:64", "--json"])
    assert rc == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    # the same count done by hand: the checkpoint's model, all 12 test images in one batch
    model, meta = load_model(tmp_path / "ev" / "last.safetensors")
    test = synthetic_cifar10(64).subset(None, None)
    with torch.no_grad():
        predicted = model.eval()(normalize(test.test_x, meta["mean"], meta["std"])).argmax(1)
    assert json.loads(last)["accuracy"] == pytest.approx(100 * float((predicted == test.test_y).float().mean()))


def test_deprecated_init_flag_still_starts_from_the_checkpoint(tmp_path, capsys):
    start = tmp_path / "fp.safetensors"
    assert main(["train", "--method", "fp", "--data", "synthetic:64", "--epochs", "1", "--batch-size", "32",
                 "--threads", "1", "--out", str(tmp_path / "fp")]) == 0
    (tmp_path / "fp" / "last.safetensors").rename(start)
    capsys.readouterr()
    assert main(["train", "--init", str(start), "--data", "synthetic:64", "--epochs", "1", "--batch-size", "32",
                 "--threads", "1", "--out", str(tmp_path / "ttq")]) == 0
    assert "--init is deprecated" in capsys.readouterr().err
    config = json.loads((tmp_path / "ttq" / "config.json").read_text())
    # stored relative to the run folder, so the folder can be resumed from anywhere
    assert config["start_from"] == "../fp.safetensors" and "init" not in config


def test_saved_config_renames_old_keys_and_rejects_unknown_ones():
    cfg = TrainConfig.from_dict({"model": "resnet32", "init": "a.th", "scale_init": "mean"})
    assert (cfg.model, cfg.start_from, cfg.scale_init) == ("resnet32", "a.th", "mean")
    with pytest.raises(ValueError, match=r"run/config.json has unknown key\(s\) \['lr_typo'\]"):
        TrainConfig.from_dict({"lr_typo": 0.1}, where="run/config.json")
    assert TrainConfig.from_dict({"lr_typo": 0.1, "lr": 0.5}, strict=False).lr == 0.5
