"""Data-parallel training on torch.distributed, as torchrun starts it; one process without it.

torchrun sets ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` in each process it starts; :func:`setup` reads them
and joins the process group: NCCL when the processes train on GPUs (one GPU each, ``cuda:LOCAL_RANK``), gloo on
CPUs.  Without those variables (plain ``ttq train``) nothing is initialised and the run is one process.

The rules every distributed run follows here:

- The batch and the learning rate are the recipe's, whatever the process count N: each process takes
  batch/N images of every global batch (``ttq_lib.data.imagefolder.ShardedBatchSampler``) and DDP averages the
  gradients, so N processes take the same steps as one process with the whole batch (up to summation order).
- Only rank 0 writes files (each atomically, as in one-process runs); the others read the run folder at the
  start and then write nothing.  A barrier separates the checks every rank makes from rank 0's first write, so
  no rank sees a folder half-written by another.
- If any rank dies, torchrun stops the others; the run folder holds the last committed epoch, and the same
  command with ``--resume DIR`` continues it, with any N.
"""
from __future__ import annotations

import copy
import datetime
import os
import warnings
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn as nn


@dataclass
class DistInfo:
    """This process's place in the run: rank of world, and its device."""
    rank: int
    world: int
    local_rank: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Rank 0, the only process that writes files or prints progress."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1


def launched_by_torchrun() -> bool:
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def setup(device_name: str = "auto") -> DistInfo:
    """Join torchrun's process group (NCCL on GPUs, gloo on CPUs), or describe the single process.

    ``device_name``: ``auto`` takes ``cuda:LOCAL_RANK`` when CUDA is present, else the CPU; ``cuda`` means
    this process's GPU; ``cpu`` forces gloo on CPUs (for tests and CPU clusters)."""
    if not launched_by_torchrun() or int(os.environ["WORLD_SIZE"]) == 1:
        device = torch.device("cuda" if device_name == "auto" and torch.cuda.is_available() else
                              ("cpu" if device_name == "auto" else device_name))
        return DistInfo(0, 1, 0, device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    use_cuda = device_name.startswith("cuda") or (device_name == "auto" and torch.cuda.is_available())
    if use_cuda:
        if not torch.cuda.is_available():
            raise RuntimeError(f"--device {device_name} asks for CUDA, which this machine lacks: use --device cpu "
                               "(gloo) or run on GPU nodes")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if not tdist.is_initialized():
        # torchrun --max-restarts keeps one key-value store across restarts, where every process of a round
        # publishes its address.  A restarted process could read the address of the dead one it replaces (seen
        # here: gloo "connection refused" on the old port), so each round uses its own prefix of the store.
        store, _, _ = next(tdist.rendezvous("env://"))
        store = tdist.PrefixStore(f"ttq-round-{os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')}", store)
        tdist.init_process_group("nccl" if use_cuda else "gloo", store=store, rank=rank, world_size=world,
                                 timeout=datetime.timedelta(minutes=30), **({"device_id": device} if use_cuda else {}))
    return DistInfo(rank, world, local_rank, device)


def teardown() -> None:
    """Leave the process group (at the end of a run, or after an error, so the others are not left waiting)."""
    if tdist.is_initialized():
        tdist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.active:
        tdist.barrier()


def all_sum(info: DistInfo, *tensors: torch.Tensor) -> None:
    """Sum each tensor over all processes, in place (loss sums, counts of correct answers)."""
    if info.active:
        for t in tensors:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)


def broadcast_buffers(info: DistInfo, model: nn.Module) -> None:
    """Every process takes rank 0's buffers (batch-norm running statistics), in place.

    DDP copies rank 0's buffers to the others before each forward, so after an epoch's last step each process
    still holds the statistics of its own last batch. Evaluating with those, each process would score its share
    of the images with a different model from the one rank 0 saves."""
    if info.active:
        for b in model.buffers():
            tdist.broadcast(b, src=0)


def per_process_batch(global_batch: int, world: int) -> int:
    """batch / N, or a clear error when N does not divide the recipe's batch."""
    if global_batch % world:
        raise ValueError(f"--batch-size {global_batch} (the global batch) does not divide among {world} "
                         f"processes: choose a multiple of {world}, or another --nproc-per-node")
    return global_batch // world


def wrap(model: nn.Module, info: DistInfo, sync_bn: bool = False) -> nn.Module:
    """The module the training steps call: ``model`` itself on one process, else DDP around it (with
    SyncBatchNorm when asked; it shares the parameters and running statistics of ``model``'s batch norms)."""
    if sync_bn:
        if info.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only): drop it on CPUs")
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    if not info.active:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    # channels_last 1x1 convolutions have ambiguous strides, which DDP reports at every step; harmless
    warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
    return DDP(model, device_ids=[info.device] if info.device.type == "cuda" else None)


def plain_batchnorm_view(model: nn.Module) -> nn.Module:
    """``model`` with every SyncBatchNorm shown as a BatchNorm2d that shares its tensors: what is saved.

    ``convert_sync_batchnorm`` changes the model's modules in place; model files record torchvision's own
    structure (``BatchNorm2d``), so checkpoints of a --sync-bn run load anywhere, on one process or many."""
    if isinstance(model, nn.SyncBatchNorm):
        bn = nn.BatchNorm2d(model.num_features, model.eps, model.momentum, model.affine, model.track_running_stats,
                            device="meta")
        bn._parameters, bn._buffers, bn.training = model._parameters, model._buffers, model.training
        return bn
    view = copy.copy(model)  # a shallow copy: the same parameters, a new dict of children
    view._modules = {name: None if child is None else plain_batchnorm_view(child)
                     for name, child in model._modules.items()}
    return view
