"""The training loop: full-precision, TWN and TTQ CIFAR ResNets, trained or fine-tuned, with per-layer history.

After every epoch one history line (:mod:`ttq_lib.training.history`) and a checkpoint are written atomically,
so a killed run resumes exactly where it stopped.  The run's choices are a
:class:`~ttq_lib.training.config.TrainConfig`.

What a run folder holds, in the order an epoch writes it: ``last.safetensors`` (the weights),
``history.jsonl``, then ``state.pt`` (optimizer state and epoch): the commit point.  A run killed before
``state.pt`` is written redoes that epoch on ``--resume``; ``metrics.json`` appears only when the last epoch is
committed, so a folder without it is never taken for a finished run.  A folder that holds a run is never
trained into again unless the caller says ``resume`` or ``overwrite``.
"""
from __future__ import annotations

import json
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
from ..formats import (load_model, load_training_state, save_checkpoint, save_training_state, write_json_atomic,
                       write_text_atomic)
from ..layers import clamp_scales_
from .config import CONFIG_FILE, TrainConfig, build, learning_rate, save_config
from .evaluate import accuracy
from .history import read_history, weight_histograms
from .provenance import command_line, provenance, repo_root


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict]:
    """Weight decay on conv / linear weights (latent ones included), not on batch norm or biases;
    on Wp, Wn only with ``decay_scales``."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        leaf = name.rsplit(".", 1)[-1]
        is_scale = leaf in ("wp", "wn")
        is_weight = leaf == "weight" and p.dim() > 1
        (decay if is_weight or (is_scale and cfg.decay_scales) else no_decay).append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


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
        print(f"{out}: this run is already finished ({cfg.epochs} of {cfg.epochs} epochs, test accuracy "
              f"{metrics.get('test_accuracy')} %); nothing to do", file=sys.stderr)
        return metrics
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    origin = provenance()  # the code that runs is the code at start, whatever is committed meanwhile
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(cfg.seed)

    committed = resume and state_path.exists() and last_path.exists()
    if committed:
        # The run's own checkpoint rebuilds the model: the file it started from may be gone or elsewhere.
        model, norm = load_model(last_path, cfg.model)
        norm = {"mean": norm["mean"], "std": norm["std"]}
    else:
        model, norm = build(cfg)
    model.to(device)
    opt = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)
    if data is None:
        data = load_cifar10(cfg.data)

    # Everything has loaded: only now is the folder touched.
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

    if cfg.train_subset or cfg.test_subset:
        data = data.subset(cfg.train_subset or len(data.train_y), cfg.test_subset or len(data.test_y),
                           seed=cfg.seed)
    train_batches = Batches(data.train_x, data.train_y, batch_size=cfg.batch_size, shuffle=True,
                            augment=True, mean=norm["mean"], std=norm["std"], seed=cfg.seed, device=device)
    steps = len(train_batches)
    history = read_history(out)[:start_epoch]
    meta = {**norm, "data": str(data.source)}

    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        train_batches.set_epoch(epoch)
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(train_batches, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not progress,
                   leave=False)
        for step, (x, y) in enumerate(bar):
            lr = learning_rate(cfg, epoch, step, steps)
            for g in opt.param_groups:
                g["lr"] = lr
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            clamp_scales_(model)
            loss_sum += loss.item() * len(y)
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss_sum / seen:.3f}", acc=f"{100 * correct / seen:.1f}", lr=f"{lr:.4g}")
        test_acc = accuracy(model, data.test_x, data.test_y, norm["mean"], norm["std"], device=device)
        row = {"epoch": epoch + 1, "lr": lr, "train_loss": loss_sum / seen, "train_acc": 100 * correct / seen,
               "test_acc": test_acc, "wall_time_s": wall_before + time.time() - t0,
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
                       f"train {row['train_acc']:.2f}%  test {test_acc:.2f}%  lr {lr:.4g}")

    final = history[-1] if history else {}
    root = repo_root()
    try:
        ckpt = str(last_path.resolve().relative_to(root))
    except ValueError:
        ckpt = str(last_path.resolve())
    metrics = {
        "model": cfg.model, "method": cfg.method, "epochs": cfg.epochs,
        "test_accuracy": final.get("test_acc"), "best_test_accuracy": max((r["test_acc"] for r in history),
                                                                        default=None),
        "checkpoint": ckpt, "command": command_line(), "start_from": cfg.start_from, "data": str(data.source),
        "train_images": len(data.train_y), "test_images": len(data.test_y),
        "wall_time_s": final.get("wall_time_s"), "device": str(device), **origin,
    }
    write_json_atomic(metrics_path, metrics)
    return metrics
