"""The ImageNet path on small image folders made here: layout checks, augmentation, the sharded order,
top-1 / top-5 evaluation, AlexNet and ResNet-18 with the paper's full-precision first and last layers, and
`ttq train --dataset imagenet` end to end on real CIFAR-10 JPEGs upscaled to 64 px (a few classes).

Time, measured on the 2-core machine while others used it (load average 4-6): 127 s for the file; the AlexNet
run 70 s (61 M parameters under Adam), the ResNet-18 run 33 s plus 7 s making the real-image folder (the
tarball scan), everything else under 20 s together.  Under a load average of 14-16 the file took 625 s.
"""
from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
import torch.nn as nn
from imagenet_folders import cifar_folder, synthetic_folder

from ttq_lib.cli import main
from ttq_lib.data.imagefolder import (ImageFolderDataset, ShardedBatchSampler, collate, decode_batch, decode_file,
                                      eval_transform, random_resized_crop_box, scan_image_folder)
from ttq_lib.data.sources import DataSourceError
from ttq_lib.formats import load_model
from ttq_lib.layers import TernaryMixin
from ttq_lib.models.imagenet import build_imagenet_model
from ttq_lib.training.config import TrainConfig
from ttq_lib.training.distributed import DistInfo, plain_batchnorm_view, wrap
from ttq_lib.training.imagenet import ImageNetTask
from ttq_lib.training.imagenet_recipe import CIFAR_RECIPE, IMAGENET_RECIPES, RECIPE_FIELDS

SMALL = ["--image-size", "32", "--eval-resize", "36", "--batch-size", "8", "--workers", "0", "--device", "cpu",
         "--threads", "2"]


@pytest.fixture(scope="module")
def real_folder(cifar_tgz, tmp_path_factory):
    return cifar_folder(cifar_tgz, tmp_path_factory.mktemp("imagenet") / "cifar3")


@pytest.fixture()
def syn(tmp_path):
    return synthetic_folder(tmp_path / "syn")


# --- layout and bad input -------------------------------------------------------------------------------------

def test_scan_reads_classes_in_sorted_order(syn):
    data = scan_image_folder(syn)
    assert data.classes == ["cat", "dog", "emu"]
    assert len(data.train) == 24 and len(data.val) == 9
    assert data.train.labels == [0] * 8 + [1] * 8 + [2] * 8
    assert all(f.parent.name == data.classes[y] for f, y in zip(data.train.files, data.train.labels))


def test_missing_val_folder_is_named(syn):
    shutil.rmtree(syn / "val")
    with pytest.raises(DataSourceError, match="has no val/ folder.*sort them into class folders"):
        scan_image_folder(syn)


def test_different_classes_in_train_and_val_are_named(syn):
    (syn / "val" / "emu").rename(syn / "val" / "owl")
    with pytest.raises(DataSourceError, match=r"only in train: \['emu'\]; only in val: \['owl'\]"):
        scan_image_folder(syn)


def test_corrupt_jpeg_is_skipped_with_a_warning_naming_it(syn):
    bad = syn / "train" / "dog" / "dog_003.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG: the header, no image data
    data = scan_image_folder(syn)
    ds = ImageFolderDataset(data.train, train=True, size=32)
    index = data.train.files.index(bad)
    with pytest.warns(UserWarning, match="skipping .*dog_003.JPEG"):
        items = [ds[(i, 0)] for i in (index - 1, index, index + 1)]
    x, y = collate(items)
    assert x.shape == (2, 3, 32, 32) and y.tolist() == [1, 1]


@pytest.mark.parametrize("argv,message", [
    (["--model", "resnet20"], "--dataset imagenet trains alexnet or resnet18, not --model resnet20"),
    (["--model", "resnet18", "--batch-size", "7", "--world", "2"], "does not divide among 2 processes"),
    (["--model", "resnet18", "--decode", "device"], "needs a CUDA device"),
    (["--model", "resnet18", "--sync-bn"], "--sync-bn needs CUDA"),
    (["--model", "alexnet", "--image-size", "32"], "too small for alexnet: at least 63"),
    (["--model", "resnet18", "--holdout", "5"], "apply to CIFAR-10 only"),
    (["--model", "resnet18", "--compile-mode", "reduce-overhead", "--world", "2"],
     "reduce-overhead (CUDA graphs) is not supported with several processes"),
])
def test_cli_refuses_and_writes_nothing(syn, tmp_path, capsys, monkeypatch, argv, message):
    if "--world" in argv:  # as torchrun would set it; the check comes before any process group is joined
        i = argv.index("--world")
        monkeypatch.setenv("WORLD_SIZE", argv[i + 1])
        monkeypatch.setenv("RANK", "0")
        argv = argv[:i] + argv[i + 2:]
    out = tmp_path / "run"
    rc = main(["train", "--dataset", "imagenet", "--data", str(syn), *SMALL, *argv, "--out", str(out)])
    assert rc == 2 and message in capsys.readouterr().err
    assert not out.exists()


def test_eval_refuses_what_it_cannot_evaluate(syn, tmp_path, capsys):
    from ttq_lib.formats import save_checkpoint
    from ttq_lib.models import build_model

    five = tmp_path / "r18-5.safetensors"  # 5 classes; the synthetic folder holds 3
    save_checkpoint(five, build_imagenet_model("resnet18", 5), {"mean": [0.5] * 3, "std": [0.2] * 3})
    cifar = tmp_path / "r20.safetensors"
    save_checkpoint(cifar, build_model("resnet20"), {"mean": [0.5] * 3, "std": [0.2] * 3})
    (tmp_path / "flat" / "val").mkdir(parents=True)
    (tmp_path / "flat" / "val" / "x.JPEG").write_bytes(b"")
    for argv, message in [
        ([str(five), "--data", str(syn)], "has 5 classes but"),
        ([str(five)], "needs --data DIR"),
        ([str(five), "--data", str(tmp_path / "flat")], "has no class folders"),
        ([str(five), "--data", str(syn), "--test-subset", "5"], "an image folder is evaluated whole"),
        ([str(cifar), "--dataset", "imagenet", "--data", str(syn)], "a CIFAR model"),
        ([str(five), "--dataset", "cifar10", "--data", "synthetic"], "evaluate it with --dataset imagenet"),
    ]:
        assert main(["eval", *argv, "--workers", "0", "--image-size", "32", "--eval-resize", "36"]) == 2, argv
        assert message in capsys.readouterr().err, argv


# --- augmentation, order, decoding ----------------------------------------------------------------------------

def test_random_resized_crop_box_stays_inside_with_the_recipe_area_and_aspect():
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        top, left, h, w = random_resized_crop_box(60, 80, g)
        assert 0 <= top and top + h <= 60 and 0 <= left and left + w <= 80
        area, aspect = h * w / (60 * 80), w / h
        # rounding to whole pixels moves area and aspect a little off the drawn values
        assert 0.07 <= area <= 1.0 and 0.7 <= aspect <= 1.4, (h, w)
    # an image far narrower than 3:4 falls back to the largest centred crop of aspect 3:4
    assert random_resized_crop_box(400, 10, torch.Generator().manual_seed(0), scale=(0.99, 1.0)) == (193, 0, 13, 10)


def test_augmentation_depends_only_on_seed_epoch_and_index(syn):
    split = scan_image_folder(syn).train
    a, b = ImageFolderDataset(split, True, 32, seed=3), ImageFolderDataset(split, True, 32, seed=3)
    assert torch.equal(a[(5, 2)][0], b[(5, 2)][0])  # another dataset object (another worker) agrees
    assert not torch.equal(a[(5, 2)][0], a[(5, 3)][0])  # another epoch, another crop


def test_eval_transform_is_resize_then_centre_crop():
    from torchvision.transforms import v2

    img = torch.randint(0, 256, (3, 50, 70), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    expected = v2.Compose([v2.Resize(40, antialias=True), v2.CenterCrop(32)])(img)
    assert torch.equal(eval_transform(img, 32, 40), expected)


def test_sharded_batches_of_two_processes_concatenate_to_one_process_batches():
    one = ShardedBatchSampler(30, 8, seed=4)
    two = [ShardedBatchSampler(30, 8, rank=r, world=2, seed=4) for r in range(2)]
    for epoch in (0, 1):
        for s in (one, *two):
            s.set_epoch(epoch)
        whole = list(one)
        assert len(whole) == 3 and all(len(b) == 8 for b in whole)  # 30 images: the partial 4th batch dropped
        assert whole == [r0 + r1 for r0, r1 in zip(*two)]
        assert len({i for b in whole for i, _ in b}) == 24 and {e for b in whole for _, e in b} == {epoch}
    one.set_epoch(0)
    first = list(one)
    one.set_epoch(1)
    assert first != list(one)  # each epoch its own order
    with pytest.raises(ValueError, match="does not divide among 3 processes"):
        ShardedBatchSampler(30, 8, rank=0, world=3)


def test_decode_batch_matches_the_worker_decoder_and_skips_what_cannot_be_decoded(syn):
    files = scan_image_folder(syn).val.files[:3]
    raw = [torch.frombuffer(bytearray(f.read_bytes()), dtype=torch.uint8) for f in files]
    decoded = decode_batch(raw, "cpu")  # the code path of --decode device, on the CPU here
    assert all(torch.equal(d, decode_file(r)) for d, r in zip(decoded, raw))
    assert decode_batch([raw[0], torch.tensor([1, 2, 3], dtype=torch.uint8)], "cpu")[1] is None


# --- evaluation: top-1 and top-5 ------------------------------------------------------------------------------

class _ColourModel(nn.Module):
    """Logits from an image's mean colour: class c scores its channel c % 3 (the synthetic folder's cue).
    ``second``: the true class is always ranked second instead (top-1 0 %, top-5 100 %)."""

    def __init__(self, classes: int, second: bool = False):
        super().__init__()
        self.classes, self.second, self.p = classes, second, nn.Parameter(torch.zeros(()))

    def forward(self, x):
        score = x.mean((2, 3))[:, [c % 3 for c in range(self.classes)]] + 0 * self.p
        if self.second:
            best = score.argmax(1)
            score = score.clone()
            score[torch.arange(len(x)), best] += 100
            score[torch.arange(len(x)), (best + 1) % self.classes] += 1000
        return score


def test_top1_and_top5_on_the_val_split(syn):
    cfg = TrainConfig(dataset="imagenet", model="resnet18", data=str(syn), batch_size=4, image_size=32,
                      eval_resize=36, workers=0)
    task = ImageNetTask(cfg, DistInfo(0, 1, 0, torch.device("cpu")), {"mean": [0.5] * 3, "std": [0.25] * 3})
    assert task.evaluate(_ColourModel(3)) == (100.0, 100.0)
    top1, top5 = task.evaluate(_ColourModel(3, second=True))
    assert top1 == 0.0 and top5 == 100.0  # 3 classes: top-5 covers them all


# --- models ---------------------------------------------------------------------------------------------------

def _full_precision_and_ternary(model):
    ternary = [n for n, m in model.named_modules() if isinstance(m, TernaryMixin)]
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)) and n not in ternary], ternary


def test_resnet18_keeps_first_conv_and_last_fc_in_full_precision():
    from ttq_lib.convert import ternarize_model

    full, ternary = _full_precision_and_ternary(ternarize_model(build_imagenet_model("resnet18", 5), method="ttq"))
    assert full == ["conv1", "fc"] and len(ternary) == 19  # 16 convs in blocks + 3 downsampling 1x1 convs


def test_recipes_fill_what_the_command_line_leaves_out():
    from ttq_lib.training.imagenet_recipe import recipe_values

    assert CIFAR_RECIPE == {k: getattr(TrainConfig(), k) for k in RECIPE_FIELDS}
    alex = recipe_values("imagenet", "alexnet", {"epochs": 2})
    assert alex["optimizer"] == "adam" and alex["adam_eps"] == 1e-5 and alex["lr"] == 1e-4
    assert alex["epochs"] == 2 and alex["batch_size"] == 128
    cfg = TrainConfig(**{**alex, "epochs": 70})
    from ttq_lib.training.config import learning_rate

    # the official AlexNet schedule: 1e-4, then 2e-5 from epoch 56, 4e-6 from epoch 64 (epochs counted from 0)
    assert [learning_rate(cfg, e, 0, 10) for e in (0, 55, 56, 63, 64, 69)] == pytest.approx(
        [1e-4, 1e-4, 2e-5, 2e-5, 4e-6, 4e-6], rel=1e-12)
    assert recipe_values("cifar10", "resnet20", {}) == CIFAR_RECIPE
    assert IMAGENET_RECIPES["resnet18"]["batch_size"] == 256


def test_sync_bn_checkpoints_as_plain_batch_norm(tmp_path):
    from ttq_lib.convert import ternarize_model
    from ttq_lib.formats import save_checkpoint

    model = ternarize_model(build_imagenet_model("resnet18", 3), method="ttq")
    with pytest.raises(ValueError, match="needs CUDA"):
        wrap(model, DistInfo(0, 1, 0, torch.device("cpu")), sync_bn=True)
    nn.SyncBatchNorm.convert_sync_batchnorm(model)  # what wrap does on GPUs (it runs on CPUs, forward does not)
    assert isinstance(model.bn1, nn.SyncBatchNorm)
    with torch.no_grad():
        model.bn1.running_mean.add_(1.5)
    save_checkpoint(tmp_path / "m.safetensors", plain_batchnorm_view(model), {"mean": [0.5] * 3, "std": [0.2] * 3})
    loaded, meta = load_model(tmp_path / "m.safetensors")
    assert meta["arch"] == "torchvision.resnet18" and type(loaded.bn1) is nn.BatchNorm2d
    assert torch.equal(loaded.bn1.running_mean, model.bn1.running_mean)
    assert isinstance(model.bn1, nn.SyncBatchNorm)  # the view left the training model as it was


# --- end to end -----------------------------------------------------------------------------------------------

def test_train_resnet18_ttq_on_real_jpegs_end_to_end(real_folder, tmp_path, capsys):
    out = tmp_path / "run"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no image of the real folder may be skipped
        assert main(["train", "--dataset", "imagenet", "--data", str(real_folder), "--model", "resnet18",
                     *SMALL, "--epochs", "2", "--lr", "0.02", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["eval_split"] == "val" and metrics["val_images"] == 12 and metrics["train_images"] == 24
    assert metrics["classes"] == 3 and metrics["processes"] == 1 and metrics["test_accuracy"] is None
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [1, 2]
    for r in history:  # 12 val images: accuracies are multiples of 1/12; top-5 of 3 classes is everything
        assert round(r["val_acc"] * 12 / 100, 6).is_integer() and r["val_top5_acc"] == 100.0
        assert {"layers", "hist", "train_loss", "lr"} <= set(r) and r["device"] == "cpu"  # the runner's estimates
    assert metrics["val_accuracy"] == history[-1]["val_acc"]
    meta = load_model(out / "last.safetensors")[1]
    assert meta["arch"] == "torchvision.resnet18" and meta["num_classes"] == 3 and meta["method"] == "ttq"
    assert meta["mean"] == pytest.approx([0.485, 0.456, 0.406])
    # ttq eval reads the crop sizes from the run's config.json and gives the training's own evaluation
    assert main(["eval", str(out / "last.safetensors"), "--data", str(real_folder), "--workers", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-9) and result["top5_accuracy"] == 100.0
    assert (result["images"], result["image_size"], result["eval_resize"]) == (12, 32, 36)
    # a folder holding val/ alone is enough to evaluate
    val_only = tmp_path / "val-only"
    shutil.copytree(real_folder / "val", val_only / "val")
    assert main(["eval", str(out / "last.safetensors"), "--data", str(val_only), "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["accuracy"] == result["accuracy"]
    # the checkpoint records its class names: a folder with as many classes but another one among them is refused
    assert meta["classes"] == sorted(p.name for p in (real_folder / "train").iterdir())
    assert main(["pack", str(out / "last.safetensors"), "-o", str(tmp_path / "packed.safetensors")]) == 0
    assert load_model(tmp_path / "packed.safetensors")[1]["classes"] == meta["classes"]  # packing keeps them
    renamed = sorted((val_only / "val").iterdir())[1]
    renamed.rename(renamed.with_name("zz-" + renamed.name))
    assert main(["eval", str(out / "last.safetensors"), "--data", str(val_only), "--workers", "0"]) == 2
    assert f"its label 1 is {renamed.name!r}, the folder's is" in capsys.readouterr().err
    # a finished run is left as it is; the folder is refused without --resume
    assert main(["train", "--resume", str(out)]) == 0
    assert "already finished" in capsys.readouterr().err
    assert main(["train", "--dataset", "imagenet", "--data", str(real_folder), "--model", "resnet18", *SMALL,
                 "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err


@pytest.mark.parametrize("world", [1, 2])
def test_a_training_batch_with_no_decodable_image_stops_the_run_with_its_step(syn, tmp_path, capsys, world):
    """Every image of one process's share of step 2 is corrupt: the run stops there, naming the step and the fix
    (the step cannot be taken, and with several processes the others would wait for it), and keeps its folder."""
    data = scan_image_folder(syn)
    sampler = ShardedBatchSampler(len(data.train), 8, rank=0, world=world, seed=0)
    second = list(sampler)[1]  # rank 0's share of the epoch's second global batch
    for index, _ in second:
        path = data.train.files[index]
        path.write_bytes(path.read_bytes()[:40])  # truncated JPEGs
    cfg = TrainConfig(model="resnet18", dataset="imagenet", data=str(syn), image_size=32, eval_resize=36,
                      batch_size=8, workers=0, device="cpu")
    task = ImageNetTask(cfg, DistInfo(0, world, 0, torch.device("cpu")), {"mean": [0.5] * 3, "std": [0.2] * 3},
                        folder=data)
    task.set_epoch(0)
    batches = iter(task)
    x, y = next(batches)
    assert x.shape == (8 // world, 3, 32, 32) and len(y) == 8 // world
    with pytest.warns(UserWarning, match="skipping"), pytest.raises(ValueError) as err:
        next(batches)
    assert f"none of the {8 // world} images of step 2 of epoch 1" in str(err.value)
    assert "delete or replace them" in str(err.value) and "--resume" in str(err.value)
    if world == 1:  # end to end: exit status 2 with the message, and the run folder left to --resume
        out = tmp_path / "run"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            assert main(["train", "--dataset", "imagenet", "--data", str(syn), "--model", "resnet18", *SMALL,
                         "--epochs", "1", "--out", str(out)]) == 2
        assert "none of the 8 images of step 2 of epoch 1" in capsys.readouterr().err
        assert (out / "config.json").exists() and not (out / "metrics.json").exists()


@pytest.mark.parametrize("decode", ["cpu", "device"])
def test_an_empty_share_of_a_batch_gives_no_batch(syn, decode):
    """A process's share of the last evaluation batch can be empty: it is skipped before any decoding (nvJPEG's
    batched call, on the device path, refuses an empty list)."""
    import dataclasses

    cfg = TrainConfig(model="resnet18", dataset="imagenet", data=str(syn), image_size=32, eval_resize=36,
                      batch_size=8, workers=0, device="cpu")
    task = ImageNetTask(cfg, DistInfo(0, 1, 0, torch.device("cpu")), {"mean": [0.5] * 3, "std": [0.2] * 3},
                        train=False)
    task.cfg = dataclasses.replace(cfg, decode=decode)  # the device path's code, run on the CPU
    empty = ([], torch.zeros(0, dtype=torch.int64), []) if decode == "device" else collate([None])
    assert task._to_device(empty, task.val_set) is None


def test_a_corrupt_val_image_is_skipped_and_left_out_of_the_count(syn, tmp_path, capsys, monkeypatch):
    bad = syn / "val" / "emu" / "emu_001.JPEG"
    bad.write_bytes(bad.read_bytes()[:40])  # a truncated JPEG
    out = tmp_path / "run"
    with pytest.warns(UserWarning, match="skipping .*emu_001.JPEG"):
        assert main(["train", "--dataset", "imagenet", "--data", str(syn), "--model", "resnet18", *SMALL,
                     "--epochs", "1", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["val_images"] == 3 * 3 - 1  # the images scored, not the files
    history = json.loads((out / "history.jsonl").read_text())
    assert round(history["val_acc"] * 8 / 100, 6).is_integer()  # a share of 8 images
    # resumed by torchrun's processes once finished: rank 0 alone says so and prints the metrics
    capsys.readouterr()
    for rank in ("1", "0"):
        monkeypatch.setenv("WORLD_SIZE", "2")
        monkeypatch.setenv("RANK", rank)
        assert main(["train", "--resume", str(out)]) == 0
        said = capsys.readouterr()
        assert ("already finished" in said.err and '"val_images": 8' in said.out) == (rank == "0"), said
        assert said.out + said.err == "" or rank == "0"


def test_train_alexnet_ttq_from_scratch_with_the_official_optimizer(syn, tmp_path):
    out = tmp_path / "alex"
    argv = ["train", "--dataset", "imagenet", "--data", str(syn), "--model", "alexnet", *SMALL, "--image-size",
            "64", "--eval-resize", "64", "--epochs", "1", "--out", str(out)]
    assert main(argv) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["optimizer"], cfg["adam_eps"], cfg["lr"], cfg["milestones"]) == ("adam", 1e-5, 1e-4, [56, 64])
    state = torch.load(out / "state.pt", weights_only=True)
    assert "exp_avg_sq" in state["optimizer"]["state"][0]  # Adam's second moment
    history = json.loads((out / "history.jsonl").read_text())
    assert history["lr"] == 1e-4
    model, meta = load_model(out / "last.safetensors")
    assert meta["arch"] == "torchvision.alexnet"
    full, ternary = _full_precision_and_ternary(model)  # the paper's conv0 and fct stay full precision
    assert full == ["features.0", "classifier.6"] and len(ternary) == 6  # 4 convs and 2 fully connected
