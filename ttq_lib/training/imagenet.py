"""The ImageNet side of a training run: batches from an image folder for this process, top-1 / top-5 evaluation.

:class:`ImageNetTask` is what ``ttq_lib.training.loop.train`` asks of a dataset: the steps of an epoch, its
batches (normalised float images and labels on the device), and an evaluation.  Decoding runs in ``workers``
DataLoader processes per training process, or on the GPU (``decode="device"``: the workers read bytes, nvJPEG
decodes each batch in one call, and crop / flip / resize run on the GPU with the same per-image seeds).
:func:`evaluate_checkpoint` is ``ttq eval --dataset imagenet``: the same evaluation for a saved model.
"""
from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..data import normalize
from ..data.imagefolder import (ImageFolderData, ImageFolderDataset, ShardedBatchSampler, collate, decode_batch,
                                scan_image_folder)
from .distributed import DistInfo, all_sum, per_process_batch


class ImageNetTask:
    """The image folder ``cfg.data`` as this process sees it (its share of every global batch)."""

    def __init__(self, cfg, info: DistInfo, norm: dict, folder: ImageFolderData | None = None,
                 train: bool = True):
        self.folder = folder or scan_image_folder(cfg.data, need_train=train)
        self.info, self.norm, self.cfg = info, norm, cfg
        self.device = info.device
        if cfg.decode == "device" and self.device.type != "cuda":
            raise ValueError("--decode device decodes JPEGs on the GPU (nvJPEG) and needs a CUDA device; this run "
                             f"uses {self.device}: drop --decode device (the --workers processes decode on the CPU)")
        self.share = per_process_batch(cfg.batch_size, info.world)  # images each process trains on a step
        self.source, self.classes = str(self.folder.root), self.folder.classes
        self.evaluated_images: int | None = None  # set by evaluate()
        self.train_set = ImageFolderDataset(self.folder.train, True, cfg.image_size, cfg.eval_resize, cfg.seed,
                                            cfg.decode)
        self.val_set = ImageFolderDataset(self.folder.val, False, cfg.image_size, cfg.eval_resize, cfg.seed,
                                          cfg.decode)
        if train:  # evaluation alone (``ttq eval``) needs neither the order nor the loader of training
            self.sampler = ShardedBatchSampler(len(self.train_set), cfg.batch_size, info.rank, info.world, cfg.seed)
            self.train_loader = self._loader(self.train_set, self.sampler, persistent=True)

    def _loader(self, dataset, sampler, persistent: bool) -> torch.utils.data.DataLoader:
        # The training loader keeps its workers across epochs; an evaluation's loader is iterated once, so its
        # workers end with its last batch instead of waiting for the loader to be collected.
        workers = self.cfg.workers
        return torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate, num_workers=workers,
                                           pin_memory=self.device.type == "cuda",
                                           persistent_workers=persistent and workers > 0)

    def __len__(self) -> int:
        return len(self.sampler)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def _to_device(self, batch, dataset: ImageFolderDataset) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Normalised images and labels on the device; None when the batch is empty (a process's share of the
        last evaluation batch can be) or no image of it could be decoded."""
        if len(batch[1]) == 0:  # before decoding: nvJPEG's batched call refuses an empty list
            return None
        if self.cfg.decode == "device":
            raw, y, keys = batch
            images = decode_batch(raw, self.device)
            kept = [i for i, img in enumerate(images) if img is not None]
            for i in set(range(len(images))) - set(kept):
                warnings.warn(f"skipping {dataset.split.files[keys[i][0]]}: it cannot be decoded as an image; "
                              "delete or replace it", stacklevel=2)
            if not kept:
                return None
            x = torch.stack([dataset.transform(images[i], *keys[i]) for i in kept])
            y = y[kept]
        else:
            x, y = batch
        x = x.to(self.device, non_blocking=True)
        return normalize(x, self.norm["mean"], self.norm["std"]), y.to(self.device, non_blocking=True)

    def __iter__(self):
        for step, batch in enumerate(self.train_loader, start=self.sampler.start_step):
            batch = self._to_device(batch, self.train_set)
            if batch is None:
                # An empty share cannot take the step, and with several processes the others would wait in the
                # gradient exchange for it: stop, with the epoch's committed state kept for --resume.
                raise ValueError(f"none of the {self.share} images of step {step + 1} of epoch "
                                 f"{self.sampler.epoch + 1} (this process's share of the global batch) could be "
                                 f"decoded: the warnings above name them; delete or replace them, then continue the "
                                 f"run with --resume (it restarts from its last committed epoch)")
            yield batch

    def evaluate(self, model: nn.Module, channels_last: bool = False) -> tuple[float, float]:
        """Top-1 and top-5 accuracy (%) on the whole val split, each process taking its share of it.
        ``evaluated_images`` keeps how many were scored (fewer than the files when some cannot be decoded)."""
        top1, top5, self.evaluated_images = self.score(model, channels_last)
        return top1, top5

    @torch.no_grad()
    def score(self, model: nn.Module, channels_last: bool = False,
              progress: bool = False) -> tuple[float, float, int]:
        """Top-1 and top-5 accuracy (%) on the val split, and its image count (all processes together).

        The counts stay on the device until the end (one read, no sync per batch) and are summed over processes."""
        was_training = model.training
        model.eval()
        info = self.info
        sampler = ShardedBatchSampler(len(self.val_set), self.cfg.batch_size, info.rank, info.world,
                                      shuffle=False, drop_last=False)
        counts = torch.zeros(3, dtype=torch.int64, device=self.device)  # top-1, top-5, images
        batches = self._loader(self.val_set, sampler, persistent=False) if len(self.val_set) else []
        for batch in tqdm(batches, desc="eval", leave=False, disable=not (progress and info.main)):
            batch = self._to_device(batch, self.val_set)
            if batch is None:  # this process's share of the last, short batch can be empty, or all undecodable
                continue
            x, y = batch
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            top = model(x).topk(min(5, len(self.classes)), dim=1).indices
            hit = top == y[:, None]
            counts += torch.stack([hit[:, 0].sum(), hit.any(1).sum(), torch.tensor(len(y), device=self.device)])
        all_sum(info, counts)
        model.train(was_training)
        top1, top5, n = counts.tolist()
        if n == 0:
            raise ValueError(f"no image of {self.source}/val could be decoded: nothing to evaluate")
        return 100.0 * top1 / n, 100.0 * top5 / n, n


def evaluate_checkpoint(model: nn.Module, meta: dict, cfg, device: torch.device) -> dict:
    """``ttq eval --dataset imagenet``: top-1 / top-5 of a loaded checkpoint on ``cfg.data``/val (one process).

    The images get the evaluation crop (``cfg.eval_resize`` then centre ``cfg.image_size``) and the
    checkpoint's own mean and std.  Its classes must be the folder's: the same names in the same (sorted) order
    when the checkpoint records them (our ImageNet runs do, as ``classes``), else the same count."""
    info = DistInfo(0, 1, 0, device)
    task = ImageNetTask(cfg, info, {"mean": meta["mean"], "std": meta["std"]}, train=False)
    saved = meta.get("classes")
    count = meta.get("num_classes") if saved is None else len(saved)
    if count not in (None, len(task.classes)):
        raise ValueError(f"the checkpoint has {count} classes but {task.source}/val holds "
                         f"{len(task.classes)} class folders: evaluate it on the folder it was trained for")
    if saved is not None and list(saved) != task.classes:
        # label i is the i-th class folder: one renamed or missing folder shifts every label after it
        first = next(i for i, (a, b) in enumerate(zip(saved, task.classes)) if a != b)
        raise ValueError(f"the checkpoint was trained on other classes than {task.source}/val holds: its label "
                         f"{first} is {saved[first]!r}, the folder's is {task.classes[first]!r} (labels follow the "
                         "sorted class-folder names): evaluate it on a folder with the class folders it was "
                         "trained on")
    top1, top5, n = task.score(model, progress=True)
    return {"top1": top1, "top5": top5, "images": n, "classes": len(task.classes), "data": task.source}
