"""Data-parallel training: N processes with batch/N each take the same steps as one process with the batch.

``test_two_processes_equal_one_process`` (paper-level claim of issue 12): a ResNet-20 (16 px images; the data-parallel
path is the same for every model, and ResNet-18's 11 M float64 weights made this test take minutes), TTQ and TWN, K = 3 SGD
steps on a global batch of 4, once in one process and once in 2 gloo processes (torch.multiprocessing,
``ttq_lib.training.distributed.setup`` reading the same variables torchrun sets) each taking its half of every
global batch from ``ShardedBatchSampler``; every parameter and buffer must end equal, latent weights, Wp and
Wn included.

Why batch norm is frozen (eval mode) in the compared runs: in training mode each process normalises with its
own half-batch's statistics, so 2 x half a batch is *not* the same computation as one whole batch (SyncBatchNorm
would make it so, but PyTorch's SyncBatchNorm runs on GPUs only).  With the running statistics used instead,
the forward pass of an image does not depend on which other images share its batch, and the equivalence is
exact up to summation order.  The TTQ runs are made with training-mode batch norm too, and must differ: the
control that shows the comparison can fail.

Tolerance: the runs are in float64, where the only difference left is the order of sums (DDP averages two
half-batch gradients; one process sums the whole batch at once): measured ~1e-15 relative; the bound is 1e-9
of the largest value of each tensor.  float32 would not do: a latent weight a rounding error away from TTQ's
threshold t * max|w| can change its region, and then Wp's gradient, between the two runs.

``test_torchrun_end_to_end_with_a_dead_rank``: `torchrun --nproc-per-node 2 -m ttq_lib.cli train` on a small
synthetic folder (gloo, CPU), twice side by side: once uninterrupted, once with rank 1 killed (SIGKILL) at the
start of epoch 2 (torchrun then stops rank 0 and fails), then continued with `torchrun ... train --resume`
from its committed epoch 1; and a third time, killed in the same way under `torchrun --max-restarts 1`, which
starts both processes again by itself (they find their own config.json and continue from epoch 1).  All three
must end with identical files.

Time: measured only on the 2-core machine under load: with ResNet-18, 582 s for the equivalence test (load 9-12;
one process alone: 44 s, almost all of it TTQ's elementwise work on 11 M float64 weights), hence the ResNet-20;
204 s for the torchrun test (three torchrun calls, each importing torch and torchvision in 2-3 processes).
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import torch
import torch.nn as nn
from imagenet_folders import synthetic_folder
from safetensors.torch import load_file

from ttq_lib.convert import ternarize_model
from ttq_lib.data.imagefolder import ShardedBatchSampler
from ttq_lib.models import build_model
from ttq_lib.training.config import TrainConfig
from ttq_lib.training.distributed import DistInfo, broadcast_buffers, setup, teardown, wrap
from ttq_lib.training.history import without_execution
from ttq_lib.training.loop import make_optimizer, train_step
from ttq_lib.training.seeds import seed_epoch

K, GLOBAL_BATCH, IMAGES, CLASSES, SIZE = 3, 4, 12, 4, 16


def _data():
    g = torch.Generator().manual_seed(7)
    return (torch.randn(IMAGES, 3, SIZE, SIZE, generator=g, dtype=torch.float64),
            torch.randint(0, CLASSES, (IMAGES,), generator=g))


def _train(info: DistInfo) -> dict:
    """K steps for each (method, batch-norm mode); the final state of each."""
    x, y = _data()
    out = {}
    for method, bn_eval in (("ttq", True), ("twn", True), ("ttq", False)):  # the last: the control
        torch.manual_seed(0)
        model = ternarize_model(build_model("resnet20", CLASSES), method=method).double().train()
        cfg = TrainConfig(model="resnet20", method=method, lr=0.05, weight_decay=1e-4)
        # running statistics from all the images (the same in every process), so that frozen batch norm
        # normalises like training-mode batch norm would: without, the untrained network's activations
        # grow layer by layer to inf
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for m in bns:
            m.momentum = None  # a cumulative average: one pass sets the statistics of the whole set
        with torch.no_grad():
            model.train()(x)
        opt = make_optimizer(model, cfg)
        net = wrap(model, info)
        for m in bns:
            m.train(not bn_eval)
        sampler = ShardedBatchSampler(IMAGES, GLOBAL_BATCH, info.rank, info.world, seed=1)
        sums = [torch.zeros((), dtype=torch.float64), torch.zeros((), dtype=torch.int64)]
        for _, keys in zip(range(K), sampler):
            idx = [i for i, _ in keys]
            assert len(idx) == GLOBAL_BATCH // info.world
            train_step(net, model, opt, x[idx], y[idx], sums)
        out[method, bn_eval] = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return out


def _worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        info = setup("cpu")
        result = _train(info)
        if rank == 0:
            torch.save(result, path)
    finally:
        teardown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_equal_one_process(tmp_path):
    import torch.multiprocessing as mp

    path = tmp_path / "two.pt"
    mp.start_processes(_worker, args=(2, _free_port(), str(path)), nprocs=2, start_method="fork")
    two = torch.load(path, weights_only=True)
    one = _train(DistInfo(0, 1, 0, torch.device("cpu")))
    for method in ("ttq", "twn"):
        a, b = one[method, True], two[method, True]
        assert a.keys() == b.keys() and any(k.endswith(".wp") for k in a) == (method == "ttq")
        for name in a:
            scale = 1 + a[name].abs().max().item() if a[name].is_floating_point() else 1
            assert torch.allclose(a[name].double(), b[name].double(), rtol=0, atol=1e-9 * scale), name
    # the control: per-process batch statistics make the runs differ
    a, b = one["ttq", False], two["ttq", False]
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in a if a[k].is_floating_point())
    assert diff > 1e-6, f"training-mode batch norm should split differently ({diff})"
    # and training really moved the weights and TTQ's scales
    torch.manual_seed(0)
    fresh = ternarize_model(build_model("resnet20", CLASSES), method="ttq").double().state_dict()
    assert not torch.equal(fresh["layer2.0.conv1.wp"], one["ttq", True]["layer2.0.conv1.wp"])
    assert not torch.equal(fresh["layer2.0.conv1.weight"], one["ttq", True]["layer2.0.conv1.weight"])


def _torchrun(data, out, *extra, env=None, resume=False):
    args = ["--resume", str(out)] if resume else [
        "--dataset", "imagenet", "--data", str(data), "--model", "resnet18", "--method", "ttq", "--image-size", "32",
        "--eval-resize", "32", "--batch-size", "4", "--epochs", "2", "--lr", "0.01", "--workers", "0", "--device",
        "cpu", "--threads", "1", "--out", str(out)]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", *extra,
           "-m", "ttq_lib.cli", "train", *args]
    # its own session, so that a failing test can kill torchrun and its workers together (see _reap)
    return subprocess.Popen(cmd, env={**os.environ, **(env or {})}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def _reap(*procs: subprocess.Popen) -> None:
    """Kill what is left of each torchrun (agent and workers): a timed-out test must not leave them running."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()


def test_torchrun_end_to_end_with_a_dead_rank(tmp_path):
    data = synthetic_folder(tmp_path / "syn", train_per_class=4, val_per_class=2)
    ref = _torchrun(data, tmp_path / "ref")
    killed = _torchrun(data, tmp_path / "run", env={"TTQ_KILL_AT": "epoch-start:2@1"})
    # torchrun --max-restarts starts both processes again by itself; they continue the run from its last epoch
    restarted = _torchrun(data, tmp_path / "auto", "--max-restarts", "1", env={"TTQ_KILL_AT": "epoch-start:2@1"})
    try:
        (ref_out, ref_err), (_, err) = ref.communicate(timeout=600), killed.communicate(timeout=600)
        auto_err = restarted.communicate(timeout=600)[1]
    finally:
        _reap(ref, killed, restarted)
    assert restarted.returncode == 0 and "exitcode: -9" in auto_err, auto_err[-3000:]
    assert ref.returncode == 0, ref_err[-3000:]
    assert killed.returncode != 0 and "exitcode: -9" in err and "local_rank: 1" in err, err[-3000:]
    history = (tmp_path / "run" / "history.jsonl").read_text().splitlines()
    assert len(history) == 1 and not (tmp_path / "run" / "metrics.json").exists()  # epoch 1 committed, no more
    resumed = _torchrun(data, tmp_path / "run", resume=True)
    try:
        err = resumed.communicate(timeout=600)[1]
    finally:
        _reap(resumed)
    assert resumed.returncode == 0, err[-3000:]
    for run in ("ref", "run", "auto"):
        files = sorted(p.name for p in (tmp_path / run).iterdir())
        assert files == ["config.json", "history.jsonl", "last.safetensors", "metrics.json", "state.pt"], files
    a = load_file(tmp_path / "ref" / "last.safetensors")
    rows = [[without_execution(json.loads(line))
             for line in (tmp_path / run / "history.jsonl").read_text().splitlines()] for run in ("ref", "run", "auto")]
    for run, history in zip(("run", "auto"), rows[1:]):
        b = load_file(tmp_path / run / "last.safetensors")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), run
        assert history == rows[0] and [r["epoch"] for r in history] == [1, 2], run
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["processes"] == 2 and metrics["global_batch"] == 4 and metrics["train_images"] == 12
    assert json.loads(ref_out[ref_out.index("{"):])["val_images"] == 6  # rank 0 alone printed the metrics


def _buffers_worker(rank: int, world: int, port: int, path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    try:
        info = setup("cpu")
        bn = nn.BatchNorm2d(3)
        bn.train()(torch.randn(4, 3, 2, 2, generator=torch.Generator().manual_seed(rank)))  # per-process statistics
        before = {k: v.clone() for k, v in bn.state_dict().items()}
        broadcast_buffers(info, bn)
        torch.save({"before": before, "after": bn.state_dict()}, f"{path}.{rank}")
    finally:
        teardown()


def test_every_process_evaluates_with_rank_0s_batch_norm_statistics(tmp_path):
    """After an epoch each process holds the running statistics of its own last batch (DDP copies rank 0's only
    before a forward); the loop broadcasts rank 0's, the ones it saves, before evaluating."""
    import torch.multiprocessing as mp

    path = tmp_path / "bufs"
    mp.start_processes(_buffers_worker, args=(2, _free_port(), str(path)), nprocs=2, start_method="fork")
    r0, r1 = (torch.load(f"{path}.{r}", weights_only=True) for r in (0, 1))
    assert not torch.equal(r0["before"]["running_mean"], r1["before"]["running_mean"])
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(r1["after"][key], r0["before"][key]) and torch.equal(r0["after"][key], r0["before"][key])


def test_dropout_masks_are_a_function_of_seed_epoch_and_rank():
    """seed_epoch, called by the loop before every epoch: a resumed run draws the masks an uninterrupted one drew,
    and two processes do not drop the same units."""
    drop, ones = nn.Dropout(0.5), torch.ones(1000)

    def mask(seed, epoch, rank):
        seed_epoch(seed, epoch, rank)
        return drop.train()(ones) == 0

    first = mask(0, 3, 0)
    torch.rand(100)  # a resumed process has drawn other numbers (model building, data loaders) before
    assert torch.equal(mask(0, 3, 0), first)
    for other in (mask(0, 3, 1), mask(0, 4, 0), mask(1, 3, 0)):
        assert 0.3 < (other != first).float().mean() < 0.7  # independent masks differ in about half the units
