"""Bad input, table-driven: every `ttq` subcommand and the public API refuse it with a message that names the
problem, and no file that existed before is changed (SHA-256 of every file in the workspace, before and after).

A CLI case must exit with status 2 and print the message on stderr; an API case must raise ValueError.
"""
from __future__ import annotations

import hashlib
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
import torch.nn as nn
from safetensors.torch import save_file

import ttq_lib
from ttq_lib.bitpack import pack_codes, unpack_codes
from ttq_lib.cli import main
from ttq_lib.data import Batches, load_cifar10
from ttq_lib.formats import load_model, load_packed, pack_checkpoint, save_checkpoint
from ttq_lib.layers import TernaryConv2d
from ttq_lib.models import build_model, resnet20, resnet32

SMALL = ["--data", "synthetic:64", "--epochs", "1", "--batch-size", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    """A workspace of good and bad files: a finished TTQ run, a full-precision checkpoint, a packed file, a
    ResNet-32 .th, corrupt, truncated and foreign files, a given-up run, a run with an edited config."""
    ws = tmp_path_factory.mktemp("bad-inputs")
    torch.manual_seed(0)
    save_checkpoint(ws / "fp.safetensors", resnet20())
    assert main(["train", *SMALL, "--start-from", str(ws / "fp.safetensors"), "--out", str(ws / "ttq_run")]) == 0
    assert main(["pack", str(ws / "ttq_run" / "last.safetensors"), "-o", str(ws / "packed.safetensors")]) == 0
    torch.save(resnet32().state_dict(), ws / "r32.th")
    good = (ws / "ttq_run" / "last.safetensors").read_bytes()
    (ws / "corrupt.safetensors").write_bytes(b"\xff" * 8 + good[8:200])
    packed = (ws / "packed.safetensors").read_bytes()
    (ws / "truncated.safetensors").write_bytes(packed[: len(packed) // 2])
    save_file({"x": torch.zeros(3)}, str(ws / "foreign.safetensors"))
    (ws / "garbage.th").write_bytes(bytes(range(256)) * 4)
    (ws / "notes.txt").write_text("not a dataset\n")
    shutil.copytree(ws / "ttq_run", ws / "stopped_run")
    (ws / "stopped_run" / "STOPPED").write_text("given up: diverged at epoch 1\n")
    (ws / "stopped_run" / "metrics.json").unlink()
    shutil.copytree(ws / "ttq_run", ws / "badkey_run")
    (ws / "badkey_run" / "metrics.json").unlink()
    config = json.loads((ws / "badkey_run" / "config.json").read_text())
    (ws / "badkey_run" / "config.json").write_text(json.dumps({**config, "learning_rate": 0.1}))
    (ws / "empty_dir").mkdir()
    return ws


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# (id, argv with {ws} for the workspace, a fragment the error must contain)
CLI_CASES = [
    ("t-above-one", ["train", *SMALL, "--t", "1.5"], "outside (0, 1)"),
    ("t-negative", ["train", *SMALL, "--t", "-0.1"], "outside (0, 1)"),
    ("t-nan", ["train", *SMALL, "--t", "nan"], "outside (0, 1)"),
    ("sparsity-one", ["train", *SMALL, "--sparsity", "1.0"], "outside [0, 1)"),
    ("sparsity-negative", ["train", *SMALL, "--sparsity", "-0.2"], "outside [0, 1)"),
    ("epochs-zero", ["train", *SMALL, "--epochs", "0"], "at least 1"),
    ("batch-zero", ["train", *SMALL, "--batch-size", "0"], "at least 1"),
    ("lr-negative", ["train", *SMALL, "--lr", "-1"], "must be positive"),
    ("lr-zero", ["train", *SMALL, "--lr", "0"], "must be positive"),
    ("twn-with-t", ["train", *SMALL, "--method", "twn", "--t", "0.2"], "does not apply to TWN"),
    ("unknown-model", ["train", *SMALL, "--model", "resnet18"], "invalid choice"),
    ("start-missing", ["train", *SMALL, "--start-from", "{ws}/nowhere.th"], "does not exist"),
    ("start-corrupt", ["train", *SMALL, "--start-from", "{ws}/corrupt.safetensors"], "corrupt or truncated"),
    ("start-truncated", ["train", *SMALL, "--start-from", "{ws}/truncated.safetensors"], "truncated"),
    ("start-foreign", ["train", *SMALL, "--start-from", "{ws}/foreign.safetensors"], "not a ttq-workbook checkpoint"),
    ("start-garbage", ["train", *SMALL, "--start-from", "{ws}/garbage.th"], "cannot read"),
    ("start-wrong-arch", ["train", *SMALL, "--start-from", "{ws}/r32.th"], "holds a resnet32"),
    ("start-packed", ["train", *SMALL, "--start-from", "{ws}/packed.safetensors"], "packed files are for inference"),
    ("start-ttq-other-t", ["train", *SMALL, "--start-from", "{ws}/ttq_run/last.safetensors", "--t", "0.1"],
     "was ternarized with --t 0.05"),
    ("start-ttq-as-twn", ["train", *SMALL, "--start-from", "{ws}/ttq_run/last.safetensors", "--method", "twn"],
     "is a ttq model"),
    ("start-ttq-scale-init", ["train", *SMALL, "--start-from", "{ws}/ttq_run/last.safetensors",
                              "--scale-init", "mean"], "already has trained Wp, Wn"),
    ("start-ttq-quantize-last", ["train", *SMALL, "--start-from", "{ws}/ttq_run/last.safetensors",
                                 "--quantize-last"], "last layer kept in full precision"),
    ("out-holds-run", ["train", *SMALL, "--out", "{ws}/ttq_run"], "--resume {ws}/ttq_run"),
    ("out-holds-run-names-overwrite", ["train", *SMALL, "--out", "{ws}/ttq_run"], "--overwrite"),
    ("resume-not-a-run", ["train", "--resume", "{ws}/empty_dir"], "is not a run folder: it has no config.json"),
    ("resume-stopped", ["train", "--resume", "{ws}/stopped_run"], "given up on purpose"),
    ("resume-unknown-key", ["train", "--resume", "{ws}/badkey_run"], "unknown key(s) ['learning_rate']"),
    ("resume-and-overwrite", ["train", "--resume", "{ws}/ttq_run", "--overwrite"], "not both"),
    ("resume-other-out", ["train", "--resume", "{ws}/ttq_run", "--out", "{ws}/elsewhere"], "drop --out"),
    ("data-missing", ["train", *SMALL[2:], "--data", "{ws}/nowhere.tar.gz"], "does not exist"),
    ("data-bad-synthetic", ["train", *SMALL[2:], "--data", "synthetic:abc"], "bad source"),
    ("data-not-tarball", ["train", *SMALL[2:], "--data", "{ws}/notes.txt"], "not a tarball"),
    ("eval-missing", ["eval", "{ws}/nowhere.safetensors", "--data", "synthetic:64"], "does not exist"),
    ("eval-corrupt", ["eval", "{ws}/corrupt.safetensors", "--data", "synthetic:64"], "corrupt or truncated"),
    ("eval-truncated", ["eval", "{ws}/truncated.safetensors", "--data", "synthetic:64"], "truncated"),
    ("eval-foreign", ["eval", "{ws}/foreign.safetensors", "--data", "synthetic:64"], "not a ttq-workbook"),
    ("eval-bad-data", ["eval", "{ws}/packed.safetensors", "--data", "{ws}/notes.txt"], "not a tarball"),
    ("pack-onto-itself", ["pack", "{ws}/ttq_run/last.safetensors", "-o", "{ws}/ttq_run/last.safetensors"],
     "is the input file"),
    ("pack-existing-output", ["pack", "{ws}/ttq_run/last.safetensors", "-o", "{ws}/fp.safetensors"],
     "pass --force"),
    ("pack-full-precision", ["pack", "{ws}/fp.safetensors", "-o", "{ws}/new.safetensors"], "full-precision"),
    ("pack-unknown-scheme", ["pack", "{ws}/ttq_run/last.safetensors", "-o", "{ws}/n.safetensors", "--scheme",
                             "base4"], "invalid choice"),
    ("size-corrupt", ["size", "{ws}/corrupt.safetensors"], "corrupt or truncated"),
    ("size-missing", ["size", "{ws}/nowhere.safetensors"], "does not exist"),
    ("demo-missing", ["demo", "--checkpoint", "{ws}/nowhere.th", "--data", "synthetic:64"], "does not exist"),
]


@pytest.mark.parametrize("argv,message", [c[1:] for c in CLI_CASES], ids=[c[0] for c in CLI_CASES])
def test_cli_refuses_bad_input_and_changes_no_file(ws, capsys, argv, message):
    argv = [a.replace("{ws}", str(ws)) for a in argv]
    if argv[0] == "train" and "--out" not in argv and "--resume" not in argv:
        argv += ["--out", str(ws / "new_run")]
    before = _hashes(ws)
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own refusals (unknown choices) exit here
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2
    assert message.replace("{ws}", str(ws)) in err
    assert _hashes(ws) == before


def _conv(**kw):
    return TernaryConv2d(3, 4, 3, **kw)


W = torch.randn(4, 3, 3, 3)
ONE = torch.tensor(1.0)

# (id, a call that must raise ValueError, a fragment of the message)
API_CASES = [
    ("ternarize-t-zero", lambda ws: ttq_lib.ternarize(W, ONE, ONE, t=0.0), "outside (0, 1)"),
    ("ternarize-nan-weight", lambda ws: ttq_lib.ternarize(torch.tensor([1.0, math.nan]), ONE, ONE), "NaN"),
    ("ternarize-inf-weight", lambda ws: ttq_lib.ternarize(torch.tensor([1.0, math.inf]), ONE, ONE), "Inf"),
    ("ternarize-empty", lambda ws: ttq_lib.ternarize(torch.empty(0), ONE, ONE), "empty"),
    ("ternarize-zero-wp", lambda ws: ttq_lib.ternarize(W, torch.tensor(0.0), ONE), "not positive"),
    ("ternarize-negative-wn", lambda ws: ttq_lib.ternarize(W, ONE, torch.tensor(-1.0)), "not positive"),
    ("ternarize-nan-wn", lambda ws: ttq_lib.ternarize(W, ONE, torch.tensor(math.nan)), "not positive"),
    ("ternarize-negative-delta", lambda ws: ttq_lib.ternarize(W, ONE, ONE, delta=-0.1), "delta"),
    ("ternarize-nan-delta", lambda ws: ttq_lib.ternarize(W, ONE, ONE, delta=math.nan), "delta"),
    ("sparsity-above-one", lambda ws: ttq_lib.threshold_sparsity(W, 1.5), "outside [0, 1)"),
    ("convert-unknown-method", lambda ws: ttq_lib.ternarize_model(resnet20(), method="bnn"), "not one of"),
    ("layer-twn-with-t", lambda ws: _conv(method="twn", t=0.1), "does not apply to TWN"),
    ("layer-unknown-scale-init", lambda ws: _conv(scale_init="zero"), "scale_init"),
    ("convert-twice", lambda ws: ttq_lib.ternarize_model(ttq_lib.ternarize_model(resnet20())), "already has"),
    ("build-unknown-arch", lambda ws: build_model("resnet21"), "resnet21"),
    ("load-corrupt", lambda ws: load_model(ws / "corrupt.safetensors"), "corrupt or truncated"),
    ("load-foreign", lambda ws: load_model(ws / "foreign.safetensors"), "not a ttq-workbook checkpoint"),
    ("load-wrong-arch", lambda ws: load_model(ws / "r32.th", "resnet20"), "holds a resnet32"),
    ("load-packed-truncated", lambda ws: load_packed(ws / "truncated.safetensors"), "truncated"),
    ("load-packed-not-packed", lambda ws: load_packed(ws / "fp.safetensors"), "not a ttq packed file"),
    ("save-no-arch", lambda ws: save_checkpoint(ws / "new.safetensors", nn.Sequential(nn.Linear(2, 2))), "arch"),
    ("pack-onto-itself", lambda ws: pack_checkpoint(ws / "packed.safetensors", ws / "packed.safetensors"),
     "is the input file"),
    ("pack-existing", lambda ws: pack_checkpoint(ws / "ttq_run/last.safetensors", ws / "fp.safetensors"),
     "already exists"),
    ("pack-float-codes", lambda ws: pack_codes(torch.tensor([0.5, -1.0]), "base3"), "integer tensor"),
    ("pack-out-of-range-codes", lambda ws: pack_codes(torch.tensor([2, 0]), "2bit"), "-1, 0 or 1"),
    ("unpack-corrupt-byte", lambda ws: unpack_codes(torch.tensor([250], dtype=torch.uint8), 5, "base3"), "corrupt"),
    ("unpack-wrong-length", lambda ws: unpack_codes(torch.zeros(3, dtype=torch.uint8), 5, "base3"), "truncated"),
    ("data-tiny-synthetic", lambda ws: load_cifar10("synthetic:5"), "N >= 10"),
    ("batches-size-zero", lambda ws: Batches(torch.zeros(2, 3, 32, 32, dtype=torch.uint8), torch.zeros(2),
                                             batch_size=0), "batch_size"),
    ("batches-float-images", lambda ws: Batches(torch.zeros(2, 3, 32, 32), torch.zeros(2)), "uint8"),
]


@pytest.mark.parametrize("call,message", [c[1:] for c in API_CASES], ids=[c[0] for c in API_CASES])
def test_api_refuses_bad_input_and_changes_no_file(ws, call, message):
    before = _hashes(ws)
    with pytest.raises(ValueError) as info:
        call(ws)
    assert message in str(info.value)
    assert _hashes(ws) == before


def test_the_tables_are_as_large_as_promised():
    # README's "What is safe" quotes these counts
    assert len(CLI_CASES) >= 30 and len(API_CASES) >= 30
    assert {c[1][0] for c in CLI_CASES} == {"train", "eval", "pack", "size", "demo"}
