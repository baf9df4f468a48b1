"""Training and fine-tuning of full-precision, TWN and TTQ CIFAR ResNets, with per-layer history.

The defaults are the official CIFAR-10 recipe of the TTQ code: SGD with momentum 0.9, learning rate 0.1
divided by 10 at epochs 82, 123 and 150, batch 128, weight decay 2e-4.  After every epoch one history
line (losses, accuracies, and each ternary layer's Wp, Wn, threshold and sign shares: the paper's Fig. 3)
and a checkpoint are written atomically, so a killed run resumes exactly where it stopped.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .atomic import atomic_path, write_json_atomic, write_text_atomic
from .checkpoint import load_model, save_checkpoint
from .convert import layer_stats, ternarize_model, ternary_layers
from .data import CIFAR10_MEAN, CIFAR10_STD, Batches, load_cifar10
from .evaluate import accuracy
from .layers import TernaryMixin, clamp_scales_
from .models import DEPTHS, build_model
from .provenance import command_line, provenance, repo_root
from .thresholds import check_sparsity, check_t

METHODS = ("fp", "twn", "ttq")
HIST_BINS = 64


@dataclass
class TrainConfig:
    """Every choice a run makes; saved as config.json so that ``--resume`` continues the same run."""
    model: str = "resnet20"
    method: str = "ttq"
    init: str | None = None          # checkpoint to start from (fine-tuning); None trains from scratch
    data: str | None = None          # see ttq_lib.data.load_cifar10
    t: float = 0.05
    sparsity: float | None = None
    scale_init: str = "one"          # Wp = Wn = 1 as in the official code, or "mean"
    keep_first: bool = True
    keep_last: bool = True
    epochs: int = 164
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    decay_scales: bool = False       # the official script also decayed Wp, Wn (its name filter matched them)
    schedule: str = "step"           # "step" (milestones, /10 each) or "cosine"
    milestones: list = field(default_factory=lambda: [82, 123, 150])
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    train_subset: int | None = None  # use only this many training images (tests, quick looks)
    test_subset: int | None = None
    out: str = "runs/run"

    def validate(self) -> None:
        if self.model not in DEPTHS:
            raise ValueError(f"--model {self.model} is not one of {', '.join(DEPTHS)}")
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method} is not one of {', '.join(METHODS)}")
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        else:
            check_t(self.t)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"--lr {self.lr} must be positive")
        if self.schedule not in ("step", "cosine"):
            raise ValueError(f"--schedule {self.schedule} is not 'step' or 'cosine'")
        if self.init is not None and not Path(self.init).is_file():
            raise FileNotFoundError(f"--init {self.init} does not exist; give a checkpoint such as "
                                    "../shared/pretrained/resnet20-12fca82f.th or a results/ model")


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate at (epoch, step): a pure function, so a resumed run follows the same curve."""
    if cfg.schedule == "cosine":
        progress = (epoch + step / steps_per_epoch) / cfg.epochs
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))
    return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.milestones)


def build(cfg: TrainConfig) -> tuple[nn.Module, dict]:
    """The model to train: from scratch or a checkpoint, then ternarized as the method asks."""
    if cfg.init is None:
        model, meta = build_model(cfg.model), {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    else:
        model, meta = load_model(cfg.init, cfg.model)
        if meta["method"] != "fp" and meta["method"] != cfg.method:
            raise ValueError(f"--init {cfg.init} is a {meta['method']} model; fine-tune it with "
                             f"--method {meta['method']} or start from a full-precision checkpoint")
        meta = {"mean": meta["mean"], "std": meta["std"]}
    already = any(isinstance(m, TernaryMixin) for m in model.modules())
    if cfg.method != "fp" and not already:
        ternarize_model(model, method=cfg.method, t=cfg.t, sparsity=cfg.sparsity,
                        keep_first=cfg.keep_first, keep_last=cfg.keep_last, init=cfg.scale_init)
    return model, meta


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


@torch.no_grad()
def weight_histograms(model: nn.Module, bins: int = HIST_BINS) -> dict:
    """Histogram of each ternary layer's latent weights divided by max|w| (so +-t marks the threshold)."""
    out = {}
    for name, m in ternary_layers(model):
        w = m.weight.detach().float().flatten()
        w = w / w.abs().max().clamp_min(1e-12)
        out[name] = torch.histc(w, bins=bins, min=-1.0, max=1.0).int().tolist()
    return out


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def read_history(run_dir: str | os.PathLike) -> list[dict]:
    """The rows of a run's ``history.jsonl`` (one per finished epoch); [] if there is none yet."""
    path = Path(run_dir) / "history.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


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
        state = torch.load(state_path, map_location=device, weights_only=True)
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
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": epoch,
                        "wall_time_s": row["wall_time_s"]}, tmp)
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
        "checkpoint": ckpt, "command": command_line(), "init": cfg.init, "data": str(data.source),
        "train_images": len(data.train_y), "test_images": len(data.test_y),
        "wall_time_s": final.get("wall_time_s"), "device": str(device), **origin,
    }
    write_json_atomic(out / "metrics.json", metrics)
    return metrics
