"""The ImageNet side of a training run: batches from an image folder for this process, top-1 / top-5 evaluation.

:class:`ImageNetTask` is what ``ttq_lib.training.loop.train`` asks of a dataset: the steps of an epoch, its
batches (normalised float images and labels on the device), and an evaluation.  Decoding runs in ``workers``
DataLoader processes per training process, or on the GPU (``decode="device"``: the workers read bytes, nvJPEG
decodes each batch in one call, and crop / flip / resize run on the GPU with the same per-image seeds).
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn

from ..data import normalize
from ..data.imagefolder import (ImageFolderData, ImageFolderDataset, ShardedBatchSampler, collate, decode_batch,
                                scan_image_folder)
from .distributed import DistInfo, all_sum, per_process_batch


class ImageNetTask:
    """The image folder ``cfg.data`` as this process sees it (its share of every global batch)."""

    def __init__(self, cfg, info: DistInfo, norm: dict, folder: ImageFolderData | None = None):
        self.folder = folder or scan_image_folder(cfg.data)
        self.info, self.norm, self.cfg = info, norm, cfg
        self.device = info.device
        if cfg.decode == "device" and self.device.type != "cuda":
            raise ValueError("--decode device decodes JPEGs on the GPU (nvJPEG) and needs a CUDA device; this run "
                             f"uses {self.device}: drop --decode device (the --workers processes decode on the CPU)")
        per_process_batch(cfg.batch_size, info.world)
        self.source, self.classes = str(self.folder.root), self.folder.classes
        self.train_set = ImageFolderDataset(self.folder.train, True, cfg.image_size, cfg.eval_resize, cfg.seed,
                                            cfg.decode)
        self.val_set = ImageFolderDataset(self.folder.val, False, cfg.image_size, cfg.eval_resize, cfg.seed,
                                          cfg.decode)
        self.sampler = ShardedBatchSampler(len(self.train_set), cfg.batch_size, info.rank, info.world, cfg.seed)
        self.train_loader = self._loader(self.train_set, self.sampler)

    def _loader(self, dataset, sampler) -> torch.utils.data.DataLoader:
        workers = self.cfg.workers
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                           pin_memory=self.device.type == "cuda", persistent_workers=workers > 0)

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _to_device(self, batch, dataset: ImageFolderDataset) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.decode == "device":
            raw, y, keys = batch
            images = decode_batch(raw, self.device)
            kept = [i for i, img in enumerate(images) if img is not None]
            for i in set(range(len(images))) - set(kept):
                warnings.warn(f"skipping {dataset.split.files[keys[i][0]]}: it cannot be decoded as an image; "
                              "delete or replace it", stacklevel=2)
            x = torch.stack([dataset.transform(images[i], *keys[i]) for i in kept])
            y = y[kept]
        else:
            x, y = batch
        x = x.to(self.device, non_blocking=True)
        return normalize(x, self.norm["mean"], self.norm["std"]), y.to(self.device, non_blocking=True)

    def __iter__(self):
        for batch in self.train_loader:
            yield self._to_device(batch, self.train_set)

    @torch.no_grad()
    def evaluate(self, model: nn.Module, channels_last: bool = False) -> tuple[float, float]:
        """Top-1 and top-5 accuracy (%) on the whole val split, each process taking its share of it."""
        was_training = model.training
        model.eval()
        sampler = ShardedBatchSampler(len(self.val_set), self.cfg.batch_size, self.info.rank, self.info.world,
                                      shuffle=False, drop_last=False)
        counts = torch.zeros(3, dtype=torch.int64, device=self.device)  # top-1, top-5, images
        for batch in self._loader(self.val_set, sampler) if len(self.val_set) else []:
            if len(batch[1]) == 0:  # this process's share of the last, short batch can be empty
                continue
            x, y = self._to_device(batch, self.val_set)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            top = model(x).topk(min(5, len(self.classes)), dim=1).indices
            hit = top == y[:, None]
            counts += torch.stack([hit[:, 0].sum(), hit.any(1).sum(), torch.tensor(len(y), device=self.device)])
        all_sum(self.info, counts)
        model.train(was_training)
        top1, top5, n = counts.tolist()
        return 100.0 * top1 / n, 100.0 * top5 / n
