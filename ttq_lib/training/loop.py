"""The training loop: full-precision, TWN and TTQ CIFAR ResNets, trained or fine-tuned, with per-layer history.

After every epoch one history line (:mod:`ttq_lib.training.history`) and a checkpoint are written atomically,
so a killed run resumes exactly where it stopped.  The run's choices are a
:class:`~ttq_lib.training.config.TrainConfig`.

What a run folder holds, in the order an epoch writes it: ``last.safetensors`` (the weights),
``history.jsonl``, then ``state.pt`` (optimizer state and epoch): the commit point.  A run killed before
``state.pt`` is written redoes that epoch on ``--resume``; ``metrics.json`` appears only when the last epoch is
committed, so a folder without it is never taken for a finished run.  A folder that holds a run is never
trained into again unless the caller says ``resume`` or ``overwrite``.

A training step reads nothing back from the device: the loss and the count of correct answers are summed
there and read every ``log_every`` steps (for the progress bar, and to stop a diverged run) and at the end of
the epoch, so on a GPU the host queues steps ahead instead of waiting for each one.
"""
from __future__ import annotations

import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..convert import layer_stats
from ..data import Batches, load_cifar10
from ..data.cifar10 import HOLDOUT_SEED
from ..data.inputs import input_origin
from ..formats import (load_model, load_training_state, save_checkpoint, save_training_state, write_json_atomic,
                       write_text_atomic)
from ..layers import clamp_scales_
from . import distributed
from .config import TrainConfig, build, default_channels_last, learning_rate, save_config, uses_cudagraphs
from .evaluate import accuracy
from .history import read_history, weight_histograms
from .provenance import command_line, provenance, repo_root
from .run_folder import check_run_folder, held_run_files
from .seeds import seed_epoch
from .hooks import RunHooks


#: The name of the optimizer group of Wp, Wn, which exists when ``scale_lr`` gives them their own learning rate.
SCALE_GROUP = "scales"


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Weight decay on conv / linear weights (latent ones included), not on batch norm or biases;
    on Wp, Wn only with ``decay_scales``.  With ``scale_lr`` Wp, Wn form a third group of their own
    (named :data:`SCALE_GROUP`), so that :func:`set_learning_rates` can give them their own rate."""
    decay, no_decay, scales = [], [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_scale = leaf in ("wp", "wn")
        is_weight = leaf == "weight" and p.dim() > 1
        if is_scale and cfg.scale_lr is not None:
            scales.append(p)
        else:
            (decay if is_weight or (is_scale and cfg.decay_scales) else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    if scales:  # only then: the two groups above are what state.pt of earlier runs holds
        groups.append({"params": scales, "weight_decay": cfg.weight_decay if cfg.decay_scales else 0.0,
                       "lr": cfg.scale_lr, "name": SCALE_GROUP})
    return groups


def set_learning_rates(opt: torch.optim.Optimizer, cfg: TrainConfig, epoch: int, step: int, steps: int) -> float:
    """Set every group's learning rate for (epoch, step): the schedule times the group's base rate (``cfg.lr``,
    or ``cfg.scale_lr`` for the group of Wp, Wn); returns the rate of the weights."""
    lr = learning_rate(cfg, epoch, step, steps)
    for g in opt.param_groups:
        g["lr"] = learning_rate(cfg, epoch, step, steps, base=cfg.scale_lr) if g.get("name") == SCALE_GROUP else lr
    return lr


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the CIFAR and ResNet-18 recipes) or Adam (the official AlexNet recipe), on
    :func:`param_groups`; weight decay is L2 added to the gradient in both."""
    if cfg.optimizer == "adam":
        return torch.optim.Adam(param_groups(model, cfg), lr=cfg.lr, eps=cfg.adam_eps)
    return torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)


def train_step(net: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               sums: list[torch.Tensor], bf16: bool = False, channels_last: bool = False,
               cudagraphs: bool = False) -> int:
    """One training step, the only one there is (``train`` and benchmarks/train_throughput.py both call it).

    Forward of ``net`` (the model, or DDP / torch.compile around it) and cross-entropy under bf16 autocast when
    asked, backward (DDP averages the gradients of all processes here), the optimizer step, then the clamp that
    keeps TTQ's Wp, Wn positive (on ``model``, the module that owns them).  The loss (times the batch size)
    and the count of correct answers are added to ``sums`` [loss_sum, correct] on the device: nothing is read
    back.  ``cudagraphs``: ``net`` was compiled with mode "reduce-overhead"; each step is marked as a new one, so
    that its graphs may reuse the memory of the last step's outputs (the loop keeps none of them).  Returns the
    batch size."""
    if cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = net(x)
        loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    clamp_scales_(model)
    sums[0] += loss.detach().to(sums[0].dtype) * len(y)
    sums[1] += (logits.argmax(1) == y).sum()
    return len(y)


def _read_loss(loss_sum: torch.Tensor, seen: int, epoch: int, step: int) -> float:
    """The mean training loss so far, read back from the device (a sync); a diverged run stops here.

    The weights of the epoch's steps so far are not saved: the run folder keeps the last committed epoch."""
    mean = float(loss_sum) / seen
    if not math.isfinite(mean):
        kept = f"its epochs 1-{epoch}" if epoch else "no epoch yet"
        raise ValueError(f"training diverged: the training loss is {mean} by step {step + 1} of epoch {epoch + 1}, "
                         f"which is not saved (the run folder keeps {kept}); lower --lr (or --scale-lr) and "
                         "start again, or set TTQ_CHECKS=1 to stop at the first layer whose weights or scales go bad")
    return mean


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def device_label(device: torch.device) -> str:
    """The device as each history row records it ("cpu", "cuda:NVIDIA H100 80GB HBM3"): a run resumed on
    another machine keeps the epoch times of each apart, and the plan runner estimates from this machine's."""
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


#: Fault injection for the kill tests: ``TTQ_KILL_AT=<point>:<n>`` sends SIGKILL to this process the n-th
#: time it reaches ``<point>`` (see :func:`_fault_point`); ``<point>:<n>@<rank>`` only in torchrun's process
#: of that rank.  Unset in normal use.
ENV_KILL_AT = "TTQ_KILL_AT"
_reached: dict[str, int] = {}


def _fault_point(name: str) -> None:
    """Die here, as a power cut or the OOM killer would, when ``$TTQ_KILL_AT`` names this point."""
    spec = os.environ.get(ENV_KILL_AT)
    if not spec:
        return
    spec, _, rank = spec.partition("@")
    point, _, count = spec.partition(":")
    if point == name and (not rank or rank == os.environ.get("RANK", "0")):
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def _load_data(cfg: TrainConfig, data, info, norm, folder):
    """The batches of this process and how to evaluate: CIFAR-10 tensors, or an ImageNet-style folder."""
    if cfg.dataset == "imagenet":
        from .imagenet import ImageNetTask

        return ImageNetTask(cfg, info, norm, folder), None
    if data is None:
        data = load_cifar10(cfg.data)
    if cfg.holdout:  # from here on, data.test_* are the held-out training images; the test split is dropped
        data = data.holdout(cfg.holdout, seed=HOLDOUT_SEED)
    if cfg.train_subset or cfg.test_subset:
        data = data.subset(cfg.train_subset or len(data.train_y), cfg.test_subset or len(data.test_y),
                           seed=cfg.seed)
    return Batches(data.train_x, data.train_y, batch_size=cfg.batch_size, shuffle=True, augment=True,
                   mean=norm["mean"], std=norm["std"], seed=cfg.seed, device=info.device), data


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, data=None,
          overwrite: bool = False, hooks: RunHooks | None = None) -> dict:
    """Run (or resume) one training run in ``cfg.out``; returns the metrics written to metrics.json.

    A folder that already holds a run is refused unless ``resume`` (continue it from its last committed
    epoch; a finished run is left as it is) or ``overwrite`` (delete its run files first).  Nothing is
    written or deleted until the model and the data have loaded, so a refused or failed start leaves the
    folder as it was.  ``data`` may pass an already loaded :class:`ttq_lib.data.CifarTensors`.

    ``hooks`` connect the run to a supervisor (:mod:`ttq_lib.training.hooks`: thread hints, progress).

    ``cfg.dataset == "imagenet"`` trains on an image folder, in every process torchrun started (see
    :mod:`ttq_lib.training.distributed`): each takes its share of every global batch, only rank 0 writes.
    """
    cfg.validate()
    out = Path(cfg.out)
    check_run_folder(out, resume, overwrite)
    state_path, last_path = out / "state.pt", out / "last.safetensors"
    history_path, metrics_path = out / "history.jsonl", out / "metrics.json"
    imagenet = cfg.dataset == "imagenet"
    if resume and metrics_path.exists() and len(read_history(out)) >= cfg.epochs:
        if distributed.launched_by_torchrun() and int(os.environ["RANK"]) != 0:
            return {}  # rank 0 reports it, once
        metrics = json.loads(metrics_path.read_text())
        split = metrics.get("eval_split", "test")
        print(f"{out}: this run is already finished ({cfg.epochs} of {cfg.epochs} epochs, {split} accuracy "
              f"{metrics.get(f'{split}_accuracy')} %); nothing to do", file=sys.stderr)
        return metrics
    if not imagenet and distributed.launched_by_torchrun() and int(os.environ["WORLD_SIZE"]) > 1:
        raise ValueError("several processes (torchrun) train --dataset imagenet only; CIFAR-10 runs are one "
                         "process each: start ttq train without torchrun (or with --nproc-per-node 1)")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    origin = provenance()  # the code that runs is the code at start, whatever is committed meanwhile
    folder = None
    if imagenet:  # checked before any process group exists, so bad input fails fast in every process
        from ..data.imagefolder import scan_image_folder
        from ..models.imagenet import imagenet_arch

        folder = scan_image_folder(cfg.data)
        distributed.per_process_batch(cfg.batch_size, int(os.environ.get("WORLD_SIZE", 1)))
        if cfg.compile and uses_cudagraphs(cfg.compile_mode) and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ValueError("--compile-mode reduce-overhead (CUDA graphs) is not supported with several processes "
                             "(DDP exchanges gradients between the graphs): use --compile (mode default)")
        info = distributed.setup(cfg.device)
        if cfg.sync_bn and info.device.type != "cuda":
            raise ValueError("--sync-bn needs CUDA (PyTorch's SyncBatchNorm runs on GPUs only): drop it on CPUs")
        if cfg.decode == "device" and info.device.type != "cuda":
            raise ValueError("--decode device decodes JPEGs on the GPU (nvJPEG) and needs a CUDA device; this run "
                             f"uses {info.device}: drop --decode device (the --workers processes decode on the CPU)")
    else:
        info = distributed.DistInfo(0, 1, 0, resolve_device(cfg.device))
    device = info.device
    progress = progress and info.main
    hooks = hooks if hooks is not None and info.main else RunHooks(hooks.threads_file if hooks else None)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(cfg.seed)
    # None (the default) stays None in config.json: the layout is the device's, so a plan started on one
    # machine can be continued on another; a resume on the same kind of device picks the same layout.
    channels_last = default_channels_last(device.type) if cfg.channels_last is None else cfg.channels_last

    committed = resume and state_path.exists() and last_path.exists()
    if committed:
        # The run's own checkpoint rebuilds the model: the file it started from may be gone or elsewhere.
        model, norm = load_model(last_path, imagenet_arch(cfg.model) if imagenet else cfg.model)
        norm = {"mean": norm["mean"], "std": norm["std"]}
    else:
        model, norm = build(cfg, len(folder.classes) if imagenet else 10)
    model.to(device)
    if channels_last:  # before the optimizer exists, so its momentum buffers take the same layout
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    train_batches, data = _load_data(cfg, data, info, norm, folder)
    split = "val" if imagenet else "holdout" if cfg.holdout else "test"

    # Everything has loaded (and a bad --holdout or subset size has been refused) in every process: only now
    # is the folder touched, and by rank 0 alone.
    distributed.barrier(info)
    start_epoch, wall_before = 0, 0.0
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        if metrics_path.exists():  # stale (or --overwrite): a run that goes on is not finished
            metrics_path.unlink()
    if committed:
        state = load_training_state(state_path, device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, wall_before = int(state["epoch"]) + 1, float(state["wall_time_s"])
    elif info.main:  # a new run, or one whose first epoch was never committed (no state.pt): start from epoch 0
        if resume and read_history(out):
            print(f"{out}: no state.pt, so no epoch was committed; starting again from epoch 0 (the run is "
                  "deterministic: it ends where an uninterrupted one would)", file=sys.stderr)
        for name in held_run_files(out):  # --overwrite, or leftovers of an uncommitted first epoch
            (out / name).unlink()
        save_config(cfg, out)
        write_text_atomic(history_path, "")

    steps = len(train_batches)
    history = read_history(out)[:start_epoch] if info.main else []
    source = train_batches.source if imagenet else str(data.source)
    meta = {**norm, "data": source, **({"classes": train_batches.classes} if imagenet else {"data_name": data.name})}

    net = distributed.wrap(model, info, cfg.sync_bn)  # DDP (and SyncBatchNorm) when asked; else model
    saved = distributed.plain_batchnorm_view(model) if cfg.sync_bn else model  # what the checkpoint holds
    net = torch.compile(net, mode=cfg.compile_mode) if cfg.compile else net  # model's parameters; model is saved
    cudagraphs = cfg.compile and uses_cudagraphs(cfg.compile_mode)
    bf16 = cfg.precision == "bf16"
    # float64 sums of per-batch float32 losses: the same numbers the earlier per-step loss.item() summed
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64

    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        _fault_point("epoch-start")
        seed_epoch(cfg.seed, epoch, info.rank)
        threads = hooks.epoch_start(epoch, cfg.epochs, steps)  # a runner may have freed or taken cores
        model.train()
        train_batches.set_epoch(epoch)
        sums = [torch.zeros((), dtype=sum_dtype, device=device), torch.zeros((), dtype=torch.int64, device=device)]
        seen, t_epoch = 0, time.time()
        bar = tqdm(train_batches, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for step, (x, y) in enumerate(bar):
            lr = set_learning_rates(opt, cfg, epoch, step, steps)
            seen += train_step(net, model, opt, x, y, sums, bf16, channels_last, cudagraphs)
            hooks.step(step)
            if progress and step % cfg.log_every == 0:
                mean_loss = _read_loss(sums[0], seen, epoch, step)
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{100 * int(sums[1]) / seen:.1f}", lr=f"{lr:.4g}")
        if info.active:  # the whole global batch's figures, in every process
            seen_t = torch.tensor(seen, dtype=torch.int64, device=device)
            distributed.all_sum(info, sums[0], sums[1], seen_t)
            seen = int(seen_t)
        loss_sum, correct = sums
        train_loss = _read_loss(loss_sum, seen, epoch, steps - 1)  # a sync: the steps have run
        t_train = time.time()
        hooks.evaluating()
        if imagenet:
            distributed.broadcast_buffers(info, model)  # evaluate the model rank 0 saves, in every process
            eval_acc, top5 = train_batches.evaluate(model, channels_last)
            accs = {"test_acc": None, "val_acc": eval_acc, "val_top5_acc": top5}
        else:
            eval_acc = accuracy(model, data.test_x, data.test_y, norm["mean"], norm["std"], device=device)
            accs = {"test_acc": None, "holdout_acc": eval_acc} if cfg.holdout else {"test_acc": eval_acc}
        if not info.main:
            distributed.barrier(info)  # wait for rank 0 to commit the epoch
            continue
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": 100 * int(correct) / seen,
               **accs, "eval_split": split, "wall_time_s": wall_before + time.time() - t0,
               "train_time_s": t_train - t_epoch, "eval_time_s": time.time() - t_train,  # this epoch's
               "device": device_label(device), "threads": threads,
               "layers": layer_stats(model), "hist": weight_histograms(model)}
        history.append(row)
        # state.pt is the commit point of an epoch: a run killed before it is written redoes the epoch
        save_checkpoint(last_path, saved, {**meta, "epoch": epoch + 1})
        _fault_point("after-checkpoint")
        write_text_atomic(history_path, "".join(json.dumps(r) + "\n" for r in history))
        _fault_point("after-history")
        save_training_state(state_path, model, opt, epoch, row["wall_time_s"])
        _fault_point("after-state")
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
                       f"train {row['train_acc']:.2f}%  {split} {eval_acc:.2f}%  lr {lr:.4g}")
        distributed.barrier(info)  # the epoch is committed before any process starts the next one

    distributed.barrier(info)  # the last epoch is committed before any process reports the run finished
    if not info.main:
        return {}
    return _write_metrics(cfg, history, last_path, metrics_path, data, source, device, channels_last, origin,
                          train_batches if imagenet else None, info)


def _write_metrics(cfg, history, last_path, metrics_path, data, source, device, channels_last, origin, task,
                   info) -> dict:
    """metrics.json: the run's result, written when its last epoch is committed."""
    final = history[-1] if history else {}
    root = repo_root(last_path.parent)  # the repository the run is written into, wherever the command started
    ckpt = str(last_path.resolve().relative_to(root) if root else last_path.resolve())
    best = lambda key: max((r[key] for r in history if r.get(key) is not None), default=None)  # noqa: E731
    split = "val" if task is not None else "holdout" if cfg.holdout else "test"
    if task is not None:
        evaluated = {"val_accuracy": final.get("val_acc"), "val_top5_accuracy": final.get("val_top5_acc"),
                     "best_val_accuracy": best("val_acc"),
                     "val_images": task.evaluated_images if task.evaluated_images is not None  # scored, not files
                     else len(task.val_set),
                     "classes": len(task.classes), "processes": info.world, "global_batch": cfg.batch_size}
        images = {"train_images": len(task.train_set), "test_images": 0}
    else:
        evaluated = {"holdout_accuracy": final.get("holdout_acc"), "best_holdout_accuracy": best("holdout_acc"),
                     "holdout_images": len(data.test_y), "holdout_seed": HOLDOUT_SEED} if cfg.holdout else {}
        images = {"train_images": len(data.train_y), "test_images": 0 if cfg.holdout else len(data.test_y),
                  "data_name": data.name, "data_origin": data.origin, "data_test_sha256": data.test_sha256}
    metrics = {
        "model": cfg.model, "method": cfg.method, "recipe": cfg.recipe or cfg.method, "seed": cfg.seed,
        "epochs": cfg.epochs, "eval_split": split,
        "test_accuracy": final.get("test_acc"), "best_test_accuracy": best("test_acc"), **evaluated,
        "checkpoint": ckpt, "command": command_line(), "start_from": cfg.start_from,
        **({"start_from_origin": input_origin(cfg.start_from)} if cfg.start_from else {}), "data": source,
        **images, "wall_time_s": final.get("wall_time_s"), "device": str(device), "channels_last": channels_last,
        "precision": cfg.precision, **origin,
    }
    write_json_atomic(metrics_path, metrics)
    return metrics
