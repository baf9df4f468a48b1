"""Training: a real short run on shared images, exact resume, the schedule, and bad arguments."""
import json
import math

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


def test_history_times_the_steps_and_the_evaluation_apart(tmp_path, monkeypatch):
    """train_time_s is the epoch's steps alone (a GPU target counts them without evaluation), eval_time_s the
    evaluation after them; with wall_time_s (cumulative) the two fit in each epoch's span."""
    import time

    import ttq_lib.training.tasks as tr  # the CIFAR task evaluates

    real_accuracy = tr.accuracy

    def slow_accuracy(*args, **kw):  # an evaluation known to take at least 0.5 s
        time.sleep(0.5)
        return real_accuracy(*args, **kw)

    monkeypatch.setattr(tr, "accuracy", slow_accuracy)
    train(small_cfg(tmp_path, "timed", epochs=2), progress=False, data=synthetic_cifar10(200, 64))
    hist = [json.loads(l) for l in (tmp_path / "timed" / "history.jsonl").read_text().splitlines()]
    before = 0.0
    for row in hist:
        span = row["wall_time_s"] - before
        assert row["eval_time_s"] >= 0.5 and 0 < row["train_time_s"] < span - 0.5, row
        assert row["train_time_s"] + row["eval_time_s"] <= span + 1e-3, row
        before = row["wall_time_s"]


def test_interrupted_run_resumes_to_same_weights(tmp_path, monkeypatch):
    import ttq_lib.training.tasks as tr  # the CIFAR task evaluates

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


# --- the step options (precision, compile, memory format, log interval), --scale-lr and --holdout ----------

@pytest.mark.parametrize("args,message", [
    (["--log-every", "0"], "--log-every 0 must be a whole number >= 1"),
    (["--scale-lr", "-0.1"], "--scale-lr -0.1 must be a finite number >= 0"),
    (["--scale-lr", "0.01", "--method", "twn"], "a twn model has none"),
    (["--holdout", "0"], "--holdout 0 must be a whole number >= 1"),
    (["--holdout", "64"], "--holdout 64 is out of range: the training split has 64 images"),
    (["--holdout", "10", "--test-subset", "5"], "never evaluates on the test split: drop --test-subset"),
])
def test_bad_step_options_are_clear_errors(tmp_path, capsys, args, message):
    out = tmp_path / "x"
    rc = main(["train", "--data", "synthetic:64", "--epochs", "1", "--threads", "1", "--out", str(out)] + args)
    assert rc == 2
    assert message in capsys.readouterr().err
    assert not out.exists()  # refused before the folder was touched


def test_precision_must_be_one_of_the_choices(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "synthetic:64", "--precision", "fp16", "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    err = capsys.readouterr().err.replace("'", "")  # argparse quotes the choices in some Python versions only
    assert "argument --precision: invalid choice: fp16 (choose from fp32, bf16)" in err
    with pytest.raises(ValueError, match="--precision fp16 is not one of fp32, bf16"):
        TrainConfig(precision="fp16").validate()


def test_compile_mode_must_be_one_of_the_choices_and_needs_compile(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", "synthetic:64", "--compile-mode", "fast", "--out", str(tmp_path / "x")])
    assert info.value.code == 2
    assert "argument --compile-mode: invalid choice: fast" in capsys.readouterr().err.replace("'", "")
    with pytest.raises(ValueError, match="--compile-mode fast is not one of default, reduce-overhead, max-autotune"):
        TrainConfig(compile=True, compile_mode="fast").validate()
    with pytest.raises(ValueError, match="compile_mode='reduce-overhead' applies to a compiled model: set compile"):
        TrainConfig(compile_mode="reduce-overhead").validate()  # a plan's recipe that forgot compile = true


def test_old_config_json_loads_with_the_behaviour_of_its_version():
    # config.json of a run started before these options: NCHW, fp32, eager, as that version trained
    cfg = TrainConfig.from_dict({"model": "resnet20", "method": "ttq", "epochs": 3})
    assert (cfg.channels_last, cfg.precision, cfg.compile, cfg.log_every) == (False, "fp32", False, 20)
    assert (cfg.scale_lr, cfg.holdout) == (None, None)
    # a new run leaves the layout to the device (None), recorded as such
    assert TrainConfig().channels_last is None
    assert TrainConfig.from_dict({"channels_last": None}).channels_last is None


def test_options_reach_config_json_and_the_run(tmp_path):
    out = tmp_path / "opts"
    assert main(["train", "--data", "synthetic:64", "--epochs", "1", "--batch-size", "32", "--threads", "1",
                 "--precision", "bf16", "--no-channels-last", "--log-every", "3", "--scale-lr", "0.02",
                 "--out", str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert {k: config[k] for k in ("precision", "channels_last", "log_every", "scale_lr", "compile", "holdout")} == \
        {"precision": "bf16", "channels_last": False, "log_every": 3, "scale_lr": 0.02, "compile": False,
         "holdout": None}
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["precision"], metrics["channels_last"], metrics["eval_split"]) == ("bf16", False, "test")
    # the default layout on the CPU is channels_last; config.json keeps None (the device's choice)
    assert main(["train", "--data", "synthetic:64", "--epochs", "1", "--batch-size", "32", "--threads", "1",
                 "--out", str(tmp_path / "default")]) == 0
    assert json.loads((tmp_path / "default" / "config.json").read_text())["channels_last"] is None
    assert json.loads((tmp_path / "default" / "metrics.json").read_text())["channels_last"] is True


def test_loss_is_read_back_every_log_every_steps_only(tmp_path, monkeypatch):
    import ttq_lib.training.loop as tr

    reads = []
    real = tr.read_loss
    monkeypatch.setattr(tr, "read_loss", lambda s, seen, epoch, step: reads.append(step) or real(s, seen, epoch, step))
    data = synthetic_cifar10(200, 32)  # 7 steps of 32 (the last one of 8 images)
    train(small_cfg(tmp_path, "log3", epochs=1, train_subset=None, test_subset=None, log_every=3), progress=True,
          data=data)
    assert reads == [0, 3, 6, 6]  # steps 1, 4, 7 for the progress bar, then the epoch's mean
    reads.clear()
    train(small_cfg(tmp_path, "quiet", epochs=1, train_subset=None, test_subset=None), progress=False, data=data)
    assert reads == [6]  # without a progress bar: once, at the end of the epoch


def test_diverged_run_stops_with_a_clear_error_and_keeps_its_last_epoch(tmp_path):
    cfg = small_cfg(tmp_path, "div", method="fp", epochs=2, lr=1e30, schedule="step")
    with pytest.raises(ValueError, match=r"training diverged: the training loss is nan by step 3 of epoch 1, which "
                                         r"is not saved \(the run folder keeps no epoch yet\); lower --lr"):
        train(cfg, progress=False, data=synthetic_cifar10(200, 64))
    assert (tmp_path / "div" / "history.jsonl").read_text() == ""
    assert not (tmp_path / "div" / "last.safetensors").exists()


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compile_option_trains_through_torch_compile(tmp_path, monkeypatch, mode):
    # The real Inductor compile is tests/test_compile.py; here the "eager" backend (dynamo's graph capture,
    # then the captured ops as they are; it ignores the mode) shows that the run steps through the compiled
    # module with the mode asked for, and that it trains the very parameters the checkpoint saves: the weights
    # equal those of the uncompiled run.  With CUDA graphs every step is marked as a new one.
    compiled, marks = [], []
    real_compile = torch.compile

    def eager_compile(model, **kw):
        compiled.append((model, kw.get("mode")))
        return real_compile(model, backend="eager", **kw)

    monkeypatch.setattr(torch, "compile", eager_compile)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    data = synthetic_cifar10(96, 64)  # 3 steps of 32
    train(small_cfg(tmp_path, "compiled", epochs=1, compile=True, compile_mode=mode), progress=False, data=data)
    train(small_cfg(tmp_path, "eager", epochs=1), progress=False, data=data)
    assert len(compiled) == 1 and type(compiled[0][0]).__name__ == "CifarResNet" and compiled[0][1] == mode
    assert len(marks) == (3 if mode == "reduce-overhead" else 0)
    a = load_file(str(tmp_path / "compiled" / "last.safetensors"))
    b = load_file(str(tmp_path / "eager" / "last.safetensors"))
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _recorded_learning_rates(monkeypatch):
    """[(epoch, step, {group name: lr})] at every optimizer step of the run that follows."""
    import ttq_lib.training.loop as tr

    seen, real = [], tr.set_learning_rates

    def record(opt, cfg, epoch, step, steps):
        lr = real(opt, cfg, epoch, step, steps)
        seen.append((epoch, step, {g.get("name", f"group{i}"): g["lr"] for i, g in enumerate(opt.param_groups)}))
        return lr

    monkeypatch.setattr(tr, "set_learning_rates", record)
    return seen


def test_scale_lr_zero_freezes_wp_wn_while_the_weights_train(tmp_path, monkeypatch):
    seen = _recorded_learning_rates(monkeypatch)
    cfg = small_cfg(tmp_path, "frozen", epochs=2, scale_lr=0.0)
    train(cfg, progress=False, data=synthetic_cifar10(96, 64))
    assert all(lrs["scales"] == 0.0 and lrs["group0"] > 0 for _, _, lrs in seen)
    start, _ = build(small_cfg(tmp_path, "unused"))
    trained = load_file(str(tmp_path / "frozen" / "last.safetensors"))
    scales = [k for k in trained if k.endswith((".wp", ".wn"))]
    assert len(scales) == 36
    assert all(trained[k].item() == 1.0 for k in scales)  # Wp = Wn = 1 at the start (scale_init "one")
    assert not torch.equal(trained["layer1.0.conv1.weight"], start.state_dict()["layer1.0.conv1.weight"])


def test_scale_lr_gives_the_scales_their_own_rate_on_the_same_schedule(tmp_path, monkeypatch):
    seen = _recorded_learning_rates(monkeypatch)
    cfg = small_cfg(tmp_path, "own", epochs=2, lr=0.05, scale_lr=0.004, schedule="cosine")
    train(cfg, progress=False, data=synthetic_cifar10(96, 64))
    steps = 3  # 96 images in batches of 32
    assert [(e, s) for e, s, _ in seen] == [(e, s) for e in range(2) for s in range(steps)]
    for epoch, step, lrs in seen:
        # the cosine factor of this step times each group's base rate
        factor = 0.5 * (1 + math.cos(math.pi * (epoch + step / steps) / 2))
        assert lrs["group0"] == lrs["group1"] == pytest.approx(0.05 * factor)
        assert lrs["scales"] == pytest.approx(0.004 * factor)
    assert seen[0][2]["scales"] == 0.004 and seen[-1][2]["scales"] < 0.004 * 0.2
    # the third group exists only with --scale-lr, so the state.pt of earlier runs still loads
    model, _ = build(TrainConfig())
    assert len(param_groups(model, TrainConfig())) == 2
    groups = param_groups(model, TrainConfig(scale_lr=0.01))
    assert [len(g["params"]) for g in groups][2] == 36 and groups[2]["name"] == "scales"


def _indexed_data(n_train=200, n_test=40):
    """Synthetic CIFAR whose every image carries its own index in pixel (0, 0, 0:2)."""
    data = synthetic_cifar10(n_train, n_test)
    for x in (data.train_x, data.test_x):
        idx = torch.arange(len(x))
        x[:, 0, 0, 0], x[:, 0, 0, 1] = (idx % 256).to(torch.uint8), (idx // 256).to(torch.uint8)
    return data


def _indices(x):
    return set((x[:, 0, 0, 0].long() + 256 * x[:, 0, 0, 1].long()).tolist())


def test_holdout_is_disjoint_from_training_stratified_and_the_same_for_every_seed():
    data = _indexed_data(200)
    split = data.holdout(40)
    held, rest = _indices(split.test_x), _indices(split.train_x)
    assert len(held) == 40 and len(rest) == 160
    assert held.isdisjoint(rest) and held | rest == set(range(200))
    assert torch.bincount(split.test_y, minlength=10).tolist() == [4] * 10  # stratified: 40 // 10 per class
    for i, j in zip(sorted(held), split.test_y.tolist()):  # labels travel with their images
        assert data.train_y[i].item() == j
    assert _indices(data.holdout(40).test_x) == held  # the seed is fixed: no run seed is involved
    assert _indices(data.holdout(40, seed=1).test_x) != held


def test_holdout_run_evaluates_only_the_held_out_images(tmp_path, monkeypatch):
    import ttq_lib.training.tasks as tr  # the CIFAR task evaluates

    data = _indexed_data(200, 40)
    evaluated, real_accuracy = [], tr.accuracy

    def recording_accuracy(model, x, y, *args, **kw):
        evaluated.append(_indices(x))
        return real_accuracy(model, x, y, *args, **kw)

    monkeypatch.setattr(tr, "accuracy", recording_accuracy)
    held = _indices(data.holdout(30).test_x)
    for seed in (0, 1):
        cfg = small_cfg(tmp_path, f"seed{seed}", epochs=1, holdout=30, seed=seed, test_subset=None, train_subset=None)
        metrics = train(cfg, progress=False, data=data)
        assert evaluated[-1] == held  # the held-out training images, whatever the seed: never the test split
        assert metrics["eval_split"] == "holdout" and metrics["test_accuracy"] is None
        assert metrics["holdout_images"] == 30 and metrics["train_images"] == 170 and metrics["test_images"] == 0
        row = json.loads((tmp_path / f"seed{seed}" / "history.jsonl").read_text().splitlines()[0])
        assert row["eval_split"] == "holdout" and row["test_acc"] is None
        assert row["holdout_acc"] == metrics["holdout_accuracy"] == metrics["best_holdout_accuracy"]
        assert 0.0 <= row["holdout_acc"] <= 100.0
