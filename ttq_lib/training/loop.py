"""The training loop: full-precision, TWN and TTQ CIFAR ResNets, trained or fine-tuned, with per-layer history.

After every epoch one history line (:mod:`ttq_lib.training.history`) and a checkpoint are written atomically,
so a killed run resumes exactly where it stopped.  The run's choices are a
:class:`~ttq_lib.training.config.TrainConfig`.
"""
from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..convert import layer_stats
from ..data import Batches, load_cifar10
from ..formats import (load_training_state, save_checkpoint, save_training_state, write_json_atomic,
                       write_text_atomic)
from ..layers import clamp_scales_
from .config import TrainConfig, build, learning_rate
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


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, data=None) -> dict:
    """Run (or resume) one training run in ``cfg.out``; returns the metrics written to metrics.json.

    ``data`` may pass an already loaded :class:`ttq_lib.data.CifarTensors` (notebooks, tests).
    """
    cfg.validate()
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    origin = provenance()  # the code that runs is the code at start, whatever is committed meanwhile
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(cfg.seed)

    model, norm = build(cfg)
    model.to(device)
    opt = torch.optim.SGD(param_groups(model, cfg), lr=cfg.lr, momentum=cfg.momentum)
    start_epoch, wall_before = 0, 0.0
    state_path, last_path = out / "state.pt", out / "last.safetensors"
    history_path = out / "history.jsonl"
    if resume:
        if not state_path.exists():
            raise FileNotFoundError(f"nothing to resume in {out}: no state.pt (start it without --resume)")
        state = load_training_state(state_path, device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, wall_before = int(state["epoch"]) + 1, float(state["wall_time_s"])
    else:
        write_json_atomic(out / "config.json", dataclasses.asdict(cfg))
        write_text_atomic(history_path, "")

    if data is None:
        data = load_cifar10(cfg.data)
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
        write_text_atomic(history_path, "".join(json.dumps(r) + "\n" for r in history))
        save_training_state(state_path, model, opt, epoch, row["wall_time_s"])
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
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
