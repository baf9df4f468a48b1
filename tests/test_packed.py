"""Packed model files: exact logits after a round trip, metadata, and every corruption case detected."""

import json
import os
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from ttq_lib import resnet20, ternarize_model
from ttq_lib.formats import load_model, save_checkpoint
from ttq_lib.bitpack import SCHEMES
from ttq_lib.formats import pack_checkpoint
from ttq_lib.formats.packed_file import (FORMAT, PackedFileError, is_packed_file, load_packed, save_packed,
                                         tensor_checksum)
from ttq_lib.packed_layers import PackedTernaryConv2d, PackedTernaryLinear

torch.set_num_threads(1)


def _ternary_resnet20(seed=0, **kw):
    torch.manual_seed(seed)
    model = ternarize_model(resnet20(), scale_init="mean", **kw)
    # Non-trivial batch-norm state, so a lost running statistic would change the logits.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def model():
    return _ternary_resnet20()


@pytest.fixture(scope="module")
def x():
    return torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def packed_file(model, tmp_path_factory):
    return save_packed(model, tmp_path_factory.mktemp("packed") / "r20.safetensors", scheme="base3")


def _header(path):
    raw = Path(path).read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    return raw, n, json.loads(raw[8:8 + n])


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("decode", ["lazy", "once"])
def test_packed_logits_equal_unpacked(model, x, tmp_path, scheme, decode):
    path = save_packed(model, tmp_path / "m.safetensors", scheme=scheme)
    packed, meta = load_packed(path, decode=decode)
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))
    assert meta["scheme"] == scheme and meta["arch"] == "resnet20" and meta["method"] == "ttq"
    assert isinstance(packed.layer1[0].conv1, PackedTernaryConv2d)
    assert type(packed.conv1) is torch.nn.Conv2d and type(packed.linear) is torch.nn.Linear  # kept full
    assert not packed.training
    # "once" holds the decoded weight; "lazy" holds only the packed bytes.
    assert (packed.layer1[0].conv1.weight is not None) == (decode == "once")


def test_decoded_weight_is_exactly_the_quantized_weight(model, packed_file):
    packed, _ = load_packed(packed_file)
    for name in ("layer1.0.conv1", "layer3.2.conv2"):
        ref = model.get_submodule(name).quantized_weight().detach()
        assert torch.equal(packed.get_submodule(name).decoded_weight(), ref)


@pytest.mark.parametrize("method", ["ttq", "twn"])
def test_all_layers_ternary_with_bias(x, tmp_path, method):
    # keep_first/keep_last off: the first conv and the biased last linear are packed too.
    model = _ternary_resnet20(seed=3, method=method, keep_first=False, keep_last=False)
    path = save_packed(model, tmp_path / "all.safetensors", scheme="2bit")
    packed, meta = load_packed(path)
    assert isinstance(packed.linear, PackedTernaryLinear) and packed.linear.bias is not None
    assert isinstance(packed.conv1, PackedTernaryConv2d)
    assert meta["keep_first"] is False and meta["keep_last"] is False and meta["method"] == method
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))


def test_repack_packed_model_with_other_scheme(model, x, packed_file, tmp_path):
    packed, meta = load_packed(packed_file)
    again = save_packed(packed, tmp_path / "again.safetensors", scheme="2bit", meta=meta)
    repacked, meta2 = load_packed(again)
    assert meta2["scheme"] == "2bit" and meta2["t"] == meta["t"] and meta2["keep_first"] is True
    with torch.no_grad():
        assert torch.equal(repacked(x), model(x))


def test_file_contents_and_metadata(model, packed_file):
    tensors = load_file(str(packed_file))
    _, _, header = _header(packed_file)
    meta = header["__metadata__"]
    assert meta["format"] == FORMAT and meta["format_version"] == "2" and meta["scheme"] == "base3"
    assert meta["checksum"] == tensor_checksum(tensors)
    rules = json.loads(meta["ternary_layers"])
    names = [r["name"] for r in rules]
    assert len(names) == 18 and "conv1" not in names and "linear" not in names
    assert rules[0] == {"name": "layer1.0.conv1", "method": "ttq", "t": 0.05, "sparsity": None}
    assert json.loads(meta["num_classes"]) == 10 and json.loads(meta["arch"]) == "resnet20"
    layer = "layer2.1.conv2"
    assert tensors[f"{layer}.codes"].dtype == torch.uint8
    assert tensors[f"{layer}.codes"].numel() == -(-32 * 32 * 9 // 5)
    assert tensors[f"{layer}.shape"].tolist() == [32, 32, 3, 3]
    assert tensors[f"{layer}.wp"].dtype == torch.float32 and tensors[f"{layer}.wp"].numel() == 1
    assert f"{layer}.weight" not in tensors  # no latent weights in a packed file
    assert torch.equal(tensors["layer2.1.bn2.running_var"], model.layer2[1].bn2.running_var)
    assert torch.equal(tensors["conv1.weight"], model.conv1.weight)


def test_packed_file_is_much_smaller(model, packed_file, tmp_path):
    fp = tmp_path / "fp.pt"
    torch.save(model.state_dict(), fp)
    # The latent weights plus Wp, Wn at fp32 vs base-3 codes: well over 10x for the whole file.
    assert os.path.getsize(fp) / os.path.getsize(packed_file) > 10


def test_save_is_atomic_and_leaves_no_temp(model, tmp_path):
    save_packed(model, tmp_path / "a.safetensors")
    assert [p.name for p in tmp_path.iterdir()] == ["a.safetensors"]


def test_is_packed_file(model, packed_file, tmp_path):
    assert is_packed_file(packed_file)
    ckpt = save_checkpoint(tmp_path / "c.safetensors", model, {"arch": "resnet20"})
    assert not is_packed_file(ckpt)
    (tmp_path / "t.txt").write_text("not a model")
    assert not is_packed_file(tmp_path / "t.txt")
    assert not is_packed_file(tmp_path / "missing.safetensors")


def test_load_model_dispatches_to_packed(model, x, packed_file):
    loaded, meta = load_model(packed_file)
    assert isinstance(loaded.layer1[0].conv1, PackedTernaryConv2d) and meta["scheme"] == "base3"
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_pack_checkpoint(model, x, tmp_path):
    src = save_checkpoint(tmp_path / "ttq.safetensors", model, {"arch": "resnet20"})
    dst = pack_checkpoint(src, tmp_path / "ttq.packed.safetensors", scheme="2bit")
    packed, meta = load_packed(dst)
    assert meta["scheme"] == "2bit"
    with torch.no_grad():
        assert torch.equal(packed(x), model(x))


def test_pack_checkpoint_refuses_full_precision(tmp_path):
    src = save_checkpoint(tmp_path / "fp.safetensors", resnet20(), {"arch": "resnet20"})
    with pytest.raises(ValueError, match="full-precision.*ternarize"):
        pack_checkpoint(src, tmp_path / "out.safetensors")
    assert not (tmp_path / "out.safetensors").exists()


def test_save_rejects_bad_input(model, tmp_path):
    with pytest.raises(ValueError, match="no ternary layers"):
        save_packed(resnet20(), tmp_path / "fp.safetensors")
    with pytest.raises(ValueError, match="unknown packing scheme"):
        save_packed(model, tmp_path / "x.safetensors", scheme="4bit")
    with pytest.raises(ValueError, match="arch"):
        save_packed(model, tmp_path / "x.safetensors", meta={"arch": "vgg"})
    with pytest.raises(ValueError, match="decode"):
        load_packed(tmp_path / "x.safetensors", decode="eager")


# ------------------------------------------------------------------------------- corruption cases


def test_flipped_byte_gives_checksum_error(packed_file, tmp_path):
    raw, n, header = _header(packed_file)
    start = 8 + n + header["layer2.0.conv1.codes"]["data_offsets"][0]
    bad = bytearray(raw)
    bad[start + 3] ^= 0x01
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(bad))
    with pytest.raises(PackedFileError, match="checksum"):
        load_packed(path)


def test_flipped_byte_in_batch_norm_gives_checksum_error(packed_file, tmp_path):
    raw, n, header = _header(packed_file)
    start = 8 + n + header["layer3.1.bn1.running_mean"]["data_offsets"][0]
    bad = bytearray(raw)
    bad[start] ^= 0x80
    path = tmp_path / "flipped.safetensors"
    path.write_bytes(bytes(bad))
    with pytest.raises(PackedFileError, match="checksum"):
        load_packed(path)


@pytest.mark.parametrize("keep", [0.5, 0.99, 20])
def test_truncated_file(packed_file, tmp_path, keep):
    raw = packed_file.read_bytes()
    cut = int(len(raw) * keep) if isinstance(keep, float) else keep
    path = tmp_path / "cut.safetensors"
    path.write_bytes(raw[:cut])
    with pytest.raises(PackedFileError, match="truncated"):
        load_packed(path)


def _rewrite(src, dst, *, meta_update=None, drop=None, fix_checksum=False):
    tensors = load_file(str(src))
    _, _, header = _header(src)
    meta = dict(header["__metadata__"])
    if drop:
        del tensors[drop]
    if fix_checksum:
        meta["checksum"] = tensor_checksum(tensors)
    meta.update(meta_update or {})
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_unknown_format_version(packed_file, tmp_path):
    path = _rewrite(packed_file, tmp_path / "v3.safetensors", meta_update={"format_version": "3"})
    assert is_packed_file(path)  # recognised, so load_model routes it here for the precise error
    with pytest.raises(PackedFileError, match="version '3'.*upgrade"):
        load_packed(path)


def test_version_1_file_still_loads(model, x, packed_file, tmp_path):
    # Version 1 listed the ternary layers by name; their rule was the file-wide method / t / sparsity.
    _, _, header = _header(packed_file)
    names = [r["name"] for r in json.loads(header["__metadata__"]["ternary_layers"])]
    meta_v1 = {"format_version": "1", "ternary_layers": json.dumps(names)}
    path = _rewrite(packed_file, tmp_path / "v1.safetensors", meta_update=meta_v1)
    packed, meta = load_packed(path)
    assert meta["format_version"] == "1" and "ternary_layers" not in meta
    assert packed.layer2[0].conv1.t == 0.05 and packed.layer2[0].conv1.method == "ttq"
    with torch.no_grad():
        assert torch.equal(packed(x), load_packed(packed_file)[0](x))


def test_unknown_scheme(packed_file, tmp_path):
    path = _rewrite(packed_file, tmp_path / "s.safetensors", meta_update={"scheme": "base4"})
    with pytest.raises(PackedFileError, match="unknown packing scheme 'base4'"):
        load_packed(path)


@pytest.mark.parametrize("drop", ["layer1.1.conv2.codes", "layer1.1.conv2.wn", "layer2.0.bn2.running_var"])
def test_missing_tensor(packed_file, tmp_path, drop):
    path = _rewrite(packed_file, tmp_path / "m.safetensors", drop=drop, fix_checksum=True)
    with pytest.raises(PackedFileError, match=f"missing tensor.*{drop}"):
        load_packed(path)


def test_missing_tensor_without_fixed_checksum_is_still_named(packed_file, tmp_path):
    path = _rewrite(packed_file, tmp_path / "m.safetensors", drop="layer1.0.conv1.codes")
    with pytest.raises(PackedFileError, match="missing tensor"):
        load_packed(path)


def test_not_a_safetensors_file(tmp_path, model):
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, this is a text file and not a model at all")
    pt = tmp_path / "model.pt"
    torch.save(model.state_dict(), pt)
    tiny = tmp_path / "tiny.safetensors"
    tiny.write_bytes(b"abc")
    for path in (text, pt, tiny):
        with pytest.raises(PackedFileError, match="not a safetensors file"):
            load_packed(path)


def test_ordinary_checkpoint_is_not_packed(model, tmp_path):
    ckpt = save_checkpoint(tmp_path / "c.safetensors", model, {"arch": "resnet20"})
    with pytest.raises(PackedFileError, match="not a ttq packed file"):
        load_packed(ckpt)


# ------------------------------------------------------------------------------- real checkpoint


@pytest.mark.skipif(not os.environ.get("TTQ_PRETRAINED_DIR"),
                    reason="set TTQ_PRETRAINED_DIR to the folder of resnet20-12fca82f.th to test the real model")
def test_pretrained_resnet20_round_trip(tmp_path, x):
    src = Path(os.environ["TTQ_PRETRAINED_DIR"]) / "resnet20-12fca82f.th"
    fp, _ = load_model(src)
    model = ternarize_model(fp, scale_init="mean").eval()
    fp32 = tmp_path / "fp32.pt"
    torch.save(model.state_dict(), fp32)
    path = save_packed(model, tmp_path / "r20.safetensors")
    for decode in ("lazy", "once"):
        packed, _ = load_packed(path, decode=decode)
        with torch.no_grad():
            assert torch.equal(packed(x), model(x))
    assert os.path.getsize(fp32) / os.path.getsize(path) > 12
