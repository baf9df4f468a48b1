"""Every model the API builds saves and loads back exactly, or is refused at save time with the reason.

Round trips compare every tensor with ``torch.equal`` and the logits of a fixed input; the refusals check
that the message names the problem and that no file is left behind.
"""
import json

import pytest
import torch
import torch.nn as nn
from safetensors.torch import load_file, save_file

from ttq_lib import build_model, load_model, resnet20, save_checkpoint, ternarize_model
from ttq_lib.convert import ternarize_layer, ternary_layers
from ttq_lib.formats import load_packed, save_packed
from ttq_lib.formats.checkpoint import read_checkpoint_meta
from ttq_lib.layers import TernaryConv2d
from ttq_lib.packed_layers import PackedTernaryConv2d

torch.set_num_threads(1)


def _randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial scales and batch-norm state, so a value lost on the way changes the logits."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
            if getattr(m, "method", None) == "ttq":
                m.wp.fill_(0.5 + float(torch.rand((), generator=g)))
                m.wn.fill_(0.5 + float(torch.rand((), generator=g)))
    return model.eval()


def _cifar(seed: int = 0, **kw) -> nn.Module:
    torch.manual_seed(seed)
    return _randomize(ternarize_model(resnet20(), **kw), seed)


def _x(*shape):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(7))


def _assert_same(model: nn.Module, loaded: nn.Module, x: torch.Tensor) -> None:
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert list(sd) == list(sd2)
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    with torch.no_grad():
        assert torch.equal(model.eval()(x), loaded.eval()(x))


def _rules(model: nn.Module) -> list[tuple]:
    return [(n, m.method, m.t, m.sparsity) for n, m in ternary_layers(model)]


# ------------------------------------------------------------------------------- CIFAR ResNet round trips


def test_excluded_layer_round_trips(tmp_path):
    model = _cifar(exclude=["layer2.0.conv1"])
    assert type(model.layer2[0].conv1) is nn.Conv2d
    loaded, meta = load_model(save_checkpoint(tmp_path / "m.safetensors", model))
    assert type(loaded.layer2[0].conv1) is nn.Conv2d and isinstance(loaded.layer2[0].conv2, TernaryConv2d)
    assert "layer2.0.conv1" not in [r["name"] for r in meta["ternary_layers"]]
    assert len(meta["ternary_layers"]) == 17 and meta["num_classes"] == 10
    _assert_same(model, loaded, _x(2, 3, 32, 32))


def test_per_layer_t_round_trips(tmp_path):
    model = _cifar(seed=1)
    layer = model.layer1[1].conv2
    before = layer.ternary_codes()
    layer.t = 0.1
    assert not torch.equal(before, layer.ternary_codes())  # so a lost t=0.1 would show in the codes
    loaded, meta = load_model(save_checkpoint(tmp_path / "m.safetensors", model))
    assert loaded.layer1[1].conv2.t == 0.1 and loaded.layer1[0].conv2.t == 0.05
    assert torch.equal(loaded.layer1[1].conv2.ternary_codes(), layer.ternary_codes())
    assert meta["t"] is None  # the layers differ; each one's t is in ternary_layers
    assert {"name": "layer1.1.conv2", "method": "ttq", "t": 0.1, "sparsity": None} in meta["ternary_layers"]
    assert _rules(loaded) == _rules(model)
    _assert_same(model, loaded, _x(2, 3, 32, 32))


def test_twn_round_trips(tmp_path):
    model = _cifar(seed=2, method="twn")
    loaded, meta = load_model(save_checkpoint(tmp_path / "m.safetensors", model))
    assert meta["method"] == "twn" and loaded.layer3[2].conv1.method == "twn"
    _assert_same(model, loaded, _x(2, 3, 32, 32))


def test_fixed_sparsity_round_trips(tmp_path):
    model = _cifar(seed=3, sparsity=0.3)
    loaded, meta = load_model(save_checkpoint(tmp_path / "m.safetensors", model))
    assert meta["sparsity"] == 0.3 and meta["t"] is None
    assert loaded.layer2[1].conv1.sparsity == 0.3 and loaded.layer2[1].conv1.t is None
    _assert_same(model, loaded, _x(2, 3, 32, 32))


def test_mixed_methods_round_trip(tmp_path):
    torch.manual_seed(4)
    model = resnet20()
    ternarize_layer(model, "layer1.0.conv1", method="twn")
    ternarize_layer(model, "layer3.2.conv2", method="ttq", t=0.2)
    model = _randomize(model, 4)
    loaded, meta = load_model(save_checkpoint(tmp_path / "m.safetensors", model))
    assert meta["method"] == "mixed"
    assert [r[:2] for r in _rules(loaded)] == [("layer1.0.conv1", "twn"), ("layer3.2.conv2", "ttq")]
    assert _rules(loaded) == _rules(model) and loaded.layer3[2].conv2.t == 0.2
    _assert_same(model, loaded, _x(2, 3, 32, 32))


def test_version_1_checkpoint_still_loads(tmp_path):
    """A file as version 1 wrote it: one rule, keep_first / keep_last, no layer list, no num_classes."""
    model = _cifar(seed=5, t=0.07)
    path = save_checkpoint(tmp_path / "v2.safetensors", model, {"epoch": 2})
    header = {k: json.dumps(v) for k, v in read_checkpoint_meta(path).items()
              if k not in ("ternary_layers", "num_classes")}
    save_file(load_file(str(path)), str(tmp_path / "v1.safetensors"),
              metadata={"format": "ttq-checkpoint", "version": "1", **header})
    loaded, meta = load_model(tmp_path / "v1.safetensors")
    assert "ternary_layers" not in meta and meta["t"] == 0.07 and meta["epoch"] == 2
    _assert_same(model, loaded, _x(2, 3, 32, 32))


def test_packed_round_trip_keeps_per_layer_rules(tmp_path):
    model = _cifar(seed=6, exclude=["layer3.0.conv2"])
    model.layer2[2].conv1.t = 0.12
    packed, meta = load_packed(save_packed(model, tmp_path / "p.safetensors"))
    assert type(packed.layer3[0].conv2) is nn.Conv2d
    assert packed.layer2[2].conv1.t == 0.12 and packed.layer2[1].conv1.t == 0.05
    with torch.no_grad():
        x = _x(2, 3, 32, 32)
        assert torch.equal(packed(x), model(x))
    # Re-packing a packed model keeps each layer's rule.
    again, _ = load_packed(save_packed(packed, tmp_path / "q.safetensors", scheme="2bit", meta=meta))
    assert _rules(again) == _rules(packed)


# ------------------------------------------------------------------------------- torchvision


@pytest.fixture(scope="module")
def resnet18():
    torchvision = pytest.importorskip("torchvision")
    torch.manual_seed(8)
    return _randomize(ternarize_model(torchvision.models.resnet18(num_classes=10), scale_init="mean"), 8)


def test_build_model_builds_torchvision_models_by_name():
    m = build_model("torchvision.resnet18", num_classes=7)
    assert m.fc.out_features == 7 and m.arch == "torchvision.resnet18"
    assert build_model("resnet20").arch == "resnet20"
    with pytest.raises(ValueError, match=r"unknown architecture 'vgg'.*resnet20.*torchvision\.<name>"):
        build_model("vgg")
    with pytest.raises(ValueError, match=r"'torchvision.resnet81'.*did you mean torchvision\.resnet18"):
        build_model("torchvision.resnet81")


def test_torchvision_resnet18_round_trips(resnet18, tmp_path):
    path = save_checkpoint(tmp_path / "r18.safetensors", resnet18, {"arch": "torchvision.resnet18"})
    loaded, meta = load_model(path)
    assert meta["arch"] == "torchvision.resnet18" and meta["num_classes"] == 10
    assert isinstance(loaded.layer1[0].conv1, TernaryConv2d) and type(loaded.conv1) is nn.Conv2d
    assert isinstance(loaded.layer2[0].downsample[0], TernaryConv2d)
    assert _rules(loaded) == _rules(resnet18)
    _assert_same(resnet18, loaded, _x(2, 3, 64, 64))


def test_torchvision_resnet18_packed_round_trips(resnet18, tmp_path):
    path = save_packed(resnet18, tmp_path / "r18.packed.safetensors", meta={"arch": "torchvision.resnet18"})
    packed, meta = load_packed(path)
    assert meta["arch"] == "torchvision.resnet18"
    assert isinstance(packed.layer4[1].conv2, PackedTernaryConv2d) and type(packed.fc) is nn.Linear
    with torch.no_grad():
        x = _x(2, 3, 64, 64)
        assert torch.equal(packed(x), resnet18(x))


def test_wrong_num_classes_is_refused(resnet18, tmp_path):
    target = tmp_path / "r18.safetensors"
    with pytest.raises(ValueError, match=r"do not fit torchvision.resnet18.*fc\.weight.*num_classes"):
        save_checkpoint(target, resnet18, {"arch": "torchvision.resnet18", "num_classes": 1000})
    assert not target.exists()


# ------------------------------------------------------------------------------- refusals


class TinyNet(nn.Module):
    """A model no registry knows."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.fc = nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_model_without_arch_is_refused(resnet18, tmp_path):
    for model in (resnet18, ternarize_model(TinyNet(), keep_first=False)):
        for save in (save_checkpoint, save_packed):
            target = tmp_path / "m.safetensors"
            with pytest.raises(ValueError, match=r"has no `arch`.*meta=\{'arch': "):
                save(target, model) if save is save_checkpoint else save(model, target)
            assert not target.exists()


def test_model_the_registry_cannot_build_is_refused(tmp_path):
    model = ternarize_model(TinyNet(), keep_first=False)
    model.arch = "tinynet"
    target = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match=r"cannot save this TinyNet: its arch cannot be rebuilt.*unknown "
                                         r"architecture 'tinynet'"):
        save_checkpoint(target, model)
    with pytest.raises(ValueError, match="unknown architecture 'tinynet'"):
        save_packed(model, target)
    # Saved under an arch it is not, it is refused too: the file would load as another model.
    with pytest.raises(ValueError, match=r"resnet20 has no layer 'conv'.*arch is not the architecture"):
        save_checkpoint(target, model, {"arch": "resnet20"})
    # The same without ternary layers fails on the structure: resnet20 has layers TinyNet lacks.
    with pytest.raises(ValueError, match=r"resnet20 has layer\(s\) \['conv1'"):
        save_checkpoint(target, TinyNet(), {"arch": "resnet20"})
    assert not target.exists()


def test_subclass_with_other_behaviour_is_refused(tmp_path):
    class Wider(type(resnet20())):
        def forward(self, x):
            return 2 * super().forward(x)

    target = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match="the model itself is a Wider, which build_from_meta cannot recreate"):
        save_checkpoint(target, Wider(3))
    assert not target.exists()


def test_packed_model_in_a_checkpoint_is_refused(tmp_path):
    packed, meta = load_packed(save_packed(_cifar(seed=9), tmp_path / "p.safetensors"))
    target = tmp_path / "c.safetensors"
    with pytest.raises(ValueError, match="is a PackedTernaryConv2d.*save_packed"):
        save_checkpoint(target, packed, meta)
    assert not target.exists()


def test_threshold_no_layer_accepts_is_refused(tmp_path):
    model = _cifar(seed=10)
    model.layer1[0].conv1.t = 1.5
    target = tmp_path / "m.safetensors"
    with pytest.raises(ValueError, match=r"layer 'layer1.0.conv1' cannot be rebuilt.*t=1.5"):
        save_checkpoint(target, model)
    assert not target.exists()


def test_a_refused_save_leaves_an_existing_file_alone(tmp_path):
    target = save_checkpoint(tmp_path / "m.safetensors", _cifar(seed=11))
    before = target.read_bytes()
    with pytest.raises(ValueError, match="has no `arch`"):
        save_checkpoint(target, ternarize_model(TinyNet(), keep_first=False))
    assert target.read_bytes() == before
