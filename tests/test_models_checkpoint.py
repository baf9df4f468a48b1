"""CIFAR ResNets, checkpoint loading (pretrained and ours), and the real pretrained accuracy."""
import pytest
import torch

from ttq_lib import build_model, load_model, resnet20, save_checkpoint, ternarize_model
from ttq_lib.formats import CheckpointError
from ttq_lib.training.evaluate import accuracy

PARAMS = {"resnet20": 0.27e6, "resnet32": 0.46e6, "resnet44": 0.66e6, "resnet56": 0.85e6}


@pytest.mark.parametrize("arch", list(PARAMS))
def test_parameter_counts_match_he_et_al(arch):
    n = sum(p.numel() for p in build_model(arch).parameters())
    assert n == pytest.approx(PARAMS[arch], rel=0.02)


def test_option_a_shortcut_shapes():
    out = resnet20()(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, 10)


@pytest.mark.parametrize("arch,file", [("resnet20", "resnet20-12fca82f.th"), ("resnet32", "resnet32-d509ac18.th"),
                                       ("resnet44", "resnet44-014dd654.th"), ("resnet56", "resnet56-4bfd9763.th")])
def test_pretrained_loads_with_matching_keys(pretrained_dir, arch, file):
    model, meta = load_model(pretrained_dir / file)
    assert meta["arch"] == arch and meta["method"] == "fp"
    raw = torch.load(pretrained_dir / file, map_location="cpu", weights_only=True)["state_dict"]
    assert torch.equal(model.conv1.weight, raw["module.conv1.weight"])


def test_wrong_architecture_is_a_clear_error(pretrained_dir):
    with pytest.raises(CheckpointError, match="holds a resnet32, but resnet20 was asked"):
        load_model(pretrained_dir / "resnet32-d509ac18.th", "resnet20")


def test_foreign_state_dict_is_a_clear_error(tmp_path):
    import torchvision
    p = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), p)
    with pytest.raises(CheckpointError, match="not a CIFAR ResNet checkpoint"):
        load_model(p)


def test_garbage_file_is_a_clear_error(tmp_path):
    p = tmp_path / "x.th"
    p.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read"):
        load_model(p)


def test_our_checkpoint_round_trip(tmp_path):
    m = ternarize_model(resnet20(), t=0.07)
    with torch.no_grad():
        m.layer1[0].conv1.wp.fill_(0.4)
    m.eval()
    p = save_checkpoint(tmp_path / "m.safetensors", m, {"epoch": 3})
    m2, meta = load_model(p)
    assert meta["method"] == "ttq" and meta["t"] == 0.07 and meta["epoch"] == 3
    assert m2.layer1[0].conv1.wp.item() == pytest.approx(0.4)
    x = torch.randn(3, 3, 32, 32)
    assert torch.equal(m(x), m2.eval()(x))


def test_truncated_checkpoint_is_a_clear_error(tmp_path):
    p = save_checkpoint(tmp_path / "m.safetensors", resnet20())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_model(p)


def test_pretrained_resnet20_accuracy_on_shared_test_split(resnet20_th, cifar):
    model, meta = load_model(resnet20_th)
    acc = accuracy(model, cifar.test_x, cifar.test_y, meta["mean"], meta["std"])
    assert acc == pytest.approx(81.0, abs=0.2)


def test_saved_files_get_the_usual_permissions(tmp_path):
    import os
    umask = os.umask(0o022)
    try:
        p = save_checkpoint(tmp_path / "m.safetensors", resnet20())
    finally:
        os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o644
