"""What the training loop asks of a dataset: a :class:`Task`.  CIFAR-10 (one process) and an image folder
(ImageNet-style, every process torchrun started) are the two there are; the loop names neither.

A task is made from the run's config, before anything is written (bad input fails fast, in every process), and
knows this process's place (``info``: rank, world, device).  Once the model exists and gives its input
normalisation, ``load`` readies the batches.  Then it is the epoch's batches (``set_epoch``, ``len``, iteration),
``evaluate`` (the accuracies a history row records, on the split it reports), ``checkpoint_meta`` (what it adds
to the saved model's metadata) and ``metrics`` (what it adds to metrics.json).
"""
from __future__ import annotations

import os
from typing import Protocol

import torch.nn as nn

from ..data import Batches, load_cifar10
from ..data.cifar10 import HOLDOUT_SEED
from . import distributed
from .config import TrainConfig, uses_cudagraphs
from .devices import resolve_device
from .evaluate import accuracy


class Task(Protocol):
    info: distributed.DistInfo
    num_classes: int
    split: str     # "test", "holdout" or "val": the split evaluate() reports
    source: str    # the data, as the checkpoint and metrics.json record it

    def arch(self) -> str: ...
    def load(self, norm: dict) -> None: ...
    def set_epoch(self, epoch: int) -> None: ...
    def __len__(self) -> int: ...
    def __iter__(self): ...
    def evaluate(self, model: nn.Module, channels_last: bool) -> dict: ...
    def checkpoint_meta(self) -> dict: ...
    def metrics(self, history: list[dict]) -> dict: ...


def _best(history: list[dict], key: str) -> float | None:
    return max((r[key] for r in history if r.get(key) is not None), default=None)


class CifarTask:
    """CIFAR-10 tensors (or a stand-in such as ``synthetic``) in one process: top-1 on the test split, or with
    ``holdout`` on held-out training images (never the test split)."""
    num_classes = 10

    def __init__(self, cfg: TrainConfig, data=None):
        if distributed.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
            raise ValueError("several processes (torchrun) train --dataset imagenet only; CIFAR-10 runs are one "
                             "process each: start ttq train without torchrun (or with --nproc-per-node 1)")
        self.cfg, self.data = cfg, data
        self.info = distributed.DistInfo(0, 1, 0, resolve_device(cfg.device))
        self.split = "holdout" if cfg.holdout else "test"

    def arch(self) -> str:
        return self.cfg.model

    def load(self, norm: dict) -> None:
        cfg, data = self.cfg, self.data if self.data is not None else load_cifar10(self.cfg.data)
        if cfg.holdout:  # from here on, data.test_* are the held-out training images; the test split is dropped
            data = data.holdout(cfg.holdout, seed=HOLDOUT_SEED)
        if cfg.train_subset or cfg.test_subset:
            data = data.subset(cfg.train_subset or len(data.train_y), cfg.test_subset or len(data.test_y),
                               seed=cfg.seed)
        self.data, self.norm, self.source = data, norm, str(data.source)
        self.batches = Batches(data.train_x, data.train_y, batch_size=cfg.batch_size, shuffle=True, augment=True,
                               mean=norm["mean"], std=norm["std"], seed=cfg.seed, device=self.info.device)

    def set_epoch(self, epoch: int) -> None:
        self.batches.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        return iter(self.batches)

    def evaluate(self, model: nn.Module, channels_last: bool) -> dict:
        acc = accuracy(model, self.data.test_x, self.data.test_y, self.norm["mean"], self.norm["std"],
                       device=self.info.device)
        return {"test_acc": None, "holdout_acc": acc} if self.cfg.holdout else {"test_acc": acc}

    def checkpoint_meta(self) -> dict:
        return {"data": self.source, "data_name": self.data.name}

    def metrics(self, history: list[dict]) -> dict:
        cfg, data, final = self.cfg, self.data, history[-1] if history else {}
        evaluated = {"holdout_accuracy": final.get("holdout_acc"), "best_holdout_accuracy": _best(history, "holdout_acc"),
                     "holdout_images": len(data.test_y), "holdout_seed": HOLDOUT_SEED} if cfg.holdout else {}
        images = {"train_images": len(data.train_y), "test_images": 0 if cfg.holdout else len(data.test_y),
                  "data_name": data.name, "data_origin": data.origin, "data_test_sha256": data.test_sha256}
        return {"evaluated": evaluated, "images": images}


class ImageFolderTask:
    """An image folder (train/<class>/, val/<class>/) in every process torchrun started, each taking its share
    of every global batch (:mod:`ttq_lib.training.distributed`): top-1 and top-5 on the val split."""
    split = "val"

    def __init__(self, cfg: TrainConfig, data=None):
        from ..data.imagefolder import scan_image_folder

        self.cfg = cfg
        self.folder = scan_image_folder(cfg.data)  # checked before any process group exists, in every process
        world = int(os.environ.get("WORLD_SIZE", 1))
        distributed.per_process_batch(cfg.batch_size, world)
        if cfg.compile and uses_cudagraphs(cfg.compile_mode) and world > 1:
            raise ValueError("--compile-mode reduce-overhead (CUDA graphs) is not supported with several processes "
                             "(DDP exchanges gradients between the graphs): use --compile (mode default)")
        self.info = distributed.setup(cfg.device)
        if cfg.sync_bn and self.info.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only): drop it on CPUs")
        if cfg.decode == "device" and self.info.device.type != "cuda":
            raise ValueError("--decode device decodes JPEGs on the GPU (nvJPEG) and needs a CUDA device; this run "
                             f"uses {self.info.device}: drop --decode device (the --workers processes decode on the CPU)")
        self.num_classes = len(self.folder.classes)

    def arch(self) -> str:
        from ..models.imagenet import imagenet_arch

        return imagenet_arch(self.cfg.model)

    def load(self, norm: dict) -> None:
        from .imagenet import ImageNetTask

        self.task = ImageNetTask(self.cfg, self.info, norm, self.folder)
        self.source = self.task.source

    def set_epoch(self, epoch: int) -> None:
        self.task.set_epoch(epoch)

    def __len__(self) -> int:
        return len(self.task)

    def __iter__(self):
        return iter(self.task)

    def evaluate(self, model: nn.Module, channels_last: bool) -> dict:
        distributed.broadcast_buffers(self.info, model)  # evaluate the model rank 0 saves, in every process
        top1, top5 = self.task.evaluate(model, channels_last)
        return {"test_acc": None, "val_acc": top1, "val_top5_acc": top5}

    def checkpoint_meta(self) -> dict:
        return {"data": self.source, "classes": self.task.classes}

    def metrics(self, history: list[dict]) -> dict:
        task, final = self.task, history[-1] if history else {}
        evaluated = {"val_accuracy": final.get("val_acc"), "val_top5_accuracy": final.get("val_top5_acc"),
                     "best_val_accuracy": _best(history, "val_acc"),
                     "val_images": task.evaluated_images if task.evaluated_images is not None  # scored, not files
                     else len(task.val_set),
                     "classes": len(task.classes), "processes": self.info.world, "global_batch": self.cfg.batch_size}
        return {"evaluated": evaluated, "images": {"train_images": len(task.train_set), "test_images": 0}}


def open_task(cfg: TrainConfig, data=None) -> Task:
    """The task ``cfg.dataset`` names, checked, with this process's place in the run (``data``: CIFAR-10 tensors
    already loaded, for callers that train several runs on one copy)."""
    return (ImageFolderTask if cfg.dataset == "imagenet" else CifarTask)(cfg, data)
