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
from ..formats import (load_model, load_training_state, save_checkpoint, save_training_state, write_json_atomic,
                       write_text_atomic)
from ..layers import clamp_scales_
from .config import CONFIG_FILE, TrainConfig, build, default_channels_last, learning_rate, save_config
from .evaluate import accuracy
from .history import read_history, weight_histograms
from .provenance import command_line, provenance, repo_root


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


#: The files a run writes; a folder holding any of them holds a run.
RUN_FILES = (CONFIG_FILE, "history.jsonl", "last.safetensors", "state.pt", "metrics.json")
#: Fault injection for the kill tests: ``TTQ_KILL_AT=<point>:<n>`` sends SIGKILL to this process the n-th
#: time it reaches ``<point>`` (see :func:`_fault_point`).  Unset in normal use.
ENV_KILL_AT = "TTQ_KILL_AT"
_reached: dict[str, int] = {}


def _fault_point(name: str) -> None:
    """Die here, as a power cut or the OOM killer would, when ``$TTQ_KILL_AT`` names this point."""
    spec = os.environ.get(ENV_KILL_AT)
    if not spec:
        return
    point, _, count = spec.partition(":")
    if point == name:
        _reached[name] = _reached.get(name, 0) + 1
        if _reached[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


class RunExistsError(ValueError):
    """The output folder already holds a run, and neither resume nor overwrite was asked for."""


def held_run_files(out: Path) -> list[str]:
    """The run files (:data:`RUN_FILES`) present in ``out``."""
    return [name for name in RUN_FILES if (out / name).exists()]


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a run unless told how (see the module docstring)."""
    if resume and overwrite:
        raise ValueError("give either --resume (continue the run) or --overwrite (start it again), not both")
    held = held_run_files(out)
    if resume:
        if CONFIG_FILE not in held:
            raise FileNotFoundError(f"nothing to resume in {out}: it holds no run ({CONFIG_FILE} is missing); "
                                    "start a new run there without --resume")
        if (out / "STOPPED").exists():
            raise ValueError(f"{out} was given up on purpose ({out / 'STOPPED'} says why); it is kept as a record: "
                             "start a new run in another folder instead")
    elif held and not overwrite:
        raise RunExistsError(f"{out} already holds a run ({', '.join(held)}): pass --resume {out} to continue "
                             "it, or --overwrite to delete its run files and start again")


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, data=None,
          overwrite: bool = False) -> dict:
    """Run (or resume) one training run in ``cfg.out``; returns the metrics written to metrics.json.

    A folder that already holds a run is refused unless ``resume`` (continue it from its last committed
    epoch; a finished run is left as it is) or ``overwrite`` (delete its run files first).  Nothing is
    written or deleted until the model and the data have loaded, so a refused or failed start leaves the
    folder as it was.  ``data`` may pass an already loaded :class:`ttq_lib.data.CifarTensors`.
    """
    cfg.validate()
    out = Path(cfg.out)
    check_run_folder(out, resume, overwrite)
    state_path, last_path = out / "state.pt", out / "last.safetensors"
    history_path, metrics_path = out / "history.jsonl", out / "metrics.json"
    if resume and metrics_path.exists() and len(read_history(out)) >= cfg.epochs:
        metrics = json.loads(metrics_path.read_text())
        split = metrics.get("eval_split", "test")
        print(f"{out}: this run is already finished ({cfg.epochs} of {cfg.epochs} epochs, {split} accuracy "
              f"{metrics.get(f'{split}_accuracy')} %); nothing to do", file=sys.stderr)
        return metrics
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    origin = provenance()  # the code that runs is the code at start, whatever is committed meanwhile
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(cfg.seed)
    # None (the default) stays None in config.json: the layout is the device's, so a plan started on one
    # machine can be continued on another; a resume on the same kind of device picks the same layout.
    channels_last = default_channels_last(device.type) if cfg.channels_last is None else cfg.channels_last

    committed = resume and state_path.exists() and last_path.exists()
    if committed:
        # The run's own checkpoint rebuilds the model: the file it started from may be gone or elsewhere.
        model, norm = load_model(last_path, cfg.model)
        norm = {"mean": norm["mean"], "std": norm["std"]}
    else:
        model, norm = build(cfg)
    model.to(device)
    if channels_last:  # before the optimizer exists, so its momentum buffers take the same layout
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)
    if data is None:
        data = load_cifar10(cfg.data)
    split = "holdout" if cfg.holdout else "test"
    if cfg.holdout:  # from here on, data.test_* are the held-out training images; the test split is dropped
        data = data.holdout(cfg.holdout, seed=HOLDOUT_SEED)
    if cfg.train_subset or cfg.test_subset:
        data = data.subset(cfg.train_subset or len(data.train_y), cfg.test_subset or len(data.test_y),
                           seed=cfg.seed)

    # Everything has loaded (and a bad --holdout or subset size has been refused): only now is the folder touched.
    start_epoch, wall_before = 0, 0.0
    out.mkdir(parents=True, exist_ok=True)
    if metrics_path.exists():  # stale (or --overwrite): a run that goes on is not finished
        metrics_path.unlink()
    if committed:
        state = load_training_state(state_path, device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, wall_before = int(state["epoch"]) + 1, float(state["wall_time_s"])
    else:  # a new run, or one whose first epoch was never committed (no state.pt): start from epoch 0
        if resume and read_history(out):
            print(f"{out}: no state.pt, so no epoch was committed; starting again from epoch 0 (the run is "
                  "deterministic: it ends where an uninterrupted one would)", file=sys.stderr)
        for name in held_run_files(out):  # --overwrite, or leftovers of an uncommitted first epoch
            (out / name).unlink()
        save_config(cfg, out)
        write_text_atomic(history_path, "")

    train_batches = Batches(data.train_x, data.train_y, batch_size=cfg.batch_size, shuffle=True,
                            augment=True, mean=norm["mean"], std=norm["std"], seed=cfg.seed, device=device)
    steps = len(train_batches)
    history = read_history(out)[:start_epoch]
    meta = {**norm, "data": str(data.source)}

    net = torch.compile(model) if cfg.compile else model  # shares model's parameters; model is what is saved
    bf16 = cfg.precision == "bf16"
    # float64 sums of per-batch float32 losses: the same numbers the earlier per-step loss.item() summed
    sum_dtype = torch.float32 if device.type == "mps" else torch.float64

    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        train_batches.set_epoch(epoch)
        loss_sum = torch.zeros((), dtype=sum_dtype, device=device)
        correct = torch.zeros((), dtype=torch.int64, device=device)
        seen = 0
        bar = tqdm(train_batches, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for step, (x, y) in enumerate(bar):
            lr = set_learning_rates(opt, cfg, epoch, step, steps)
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = net(x)
                loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clamp_scales_(model)
            loss_sum += loss.detach().to(sum_dtype) * len(y)
            correct += (logits.argmax(1) == y).sum()
            seen += len(y)
            if progress and step % cfg.log_every == 0:
                mean_loss = _read_loss(loss_sum, seen, epoch, step)
                bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{100 * int(correct) / seen:.1f}", lr=f"{lr:.4g}")
        train_loss = _read_loss(loss_sum, seen, epoch, steps - 1)
        eval_acc = accuracy(model, data.test_x, data.test_y, norm["mean"], norm["std"], device=device)
        accs = {"test_acc": None, "holdout_acc": eval_acc} if cfg.holdout else {"test_acc": eval_acc}
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": 100 * int(correct) / seen,
               **accs, "eval_split": split, "wall_time_s": wall_before + time.time() - t0,
               "layers": layer_stats(model), "hist": weight_histograms(model)}
        history.append(row)
        # state.pt is the commit point of an epoch: a run killed before it is written redoes the epoch
        save_checkpoint(last_path, model, {**meta, "epoch": epoch + 1})
        _fault_point("after-checkpoint")
        write_text_atomic(history_path, "".join(json.dumps(r) + "\n" for r in history))
        _fault_point("after-history")
        save_training_state(state_path, model, opt, epoch, row["wall_time_s"])
        _fault_point("after-state")
        if progress:
            tqdm.write(f"epoch {epoch + 1}/{cfg.epochs}  loss {row['train_loss']:.4f}  "
                       f"train {row['train_acc']:.2f}%  {split} {eval_acc:.2f}%  lr {lr:.4g}")

    final = history[-1] if history else {}
    root = repo_root()
    try:
        ckpt = str(last_path.resolve().relative_to(root))
    except ValueError:
        ckpt = str(last_path.resolve())
    best = lambda key: max((r[key] for r in history if r.get(key) is not None), default=None)  # noqa: E731
    evaluated = {"holdout_accuracy": final.get("holdout_acc"), "best_holdout_accuracy": best("holdout_acc"),
                 "holdout_images": len(data.test_y), "holdout_seed": HOLDOUT_SEED} if cfg.holdout else {}
    metrics = {
        "model": cfg.model, "method": cfg.method, "recipe": cfg.recipe or cfg.method, "seed": cfg.seed,
        "epochs": cfg.epochs, "eval_split": split,
        "test_accuracy": final.get("test_acc"), "best_test_accuracy": best("test_acc"), **evaluated,
        "checkpoint": ckpt, "command": command_line(), "start_from": cfg.start_from, "data": str(data.source),
        "train_images": len(data.train_y), "test_images": 0 if cfg.holdout else len(data.test_y),
        "wall_time_s": final.get("wall_time_s"), "device": str(device), "channels_last": channels_last,
        "precision": cfg.precision, **origin,
    }
    write_json_atomic(metrics_path, metrics)
    return metrics
