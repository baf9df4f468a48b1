"""One training run's choices (:class:`TrainConfig`), its learning-rate schedule, and the model it starts from.

The defaults are the official CIFAR-10 recipe of the TTQ code: SGD with momentum 0.9, learning rate 0.1
divided by 10 at epochs 82, 123 and 150, batch 128, weight decay 2e-4, threshold factor t = 0.05.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from ..convert import ternarize_model
from ..layers import SCALE_INITS, TERNARY_METHODS, TernaryMixin
from ..formats import load_model
from ..models import CIFAR10_MEAN, CIFAR10_STD, DEPTHS, build_model
from ..thresholds import check_sparsity, check_t

#: What a run can train: full precision, or one of the ternary quantizers.
METHODS = ("fp", *TERNARY_METHODS)
SCHEDULES = ("step", "cosine")
#: Keys of config.json written before a rename, and their names now.
RENAMED_KEYS = {"init": "start_from"}


@dataclass
class TrainConfig:
    """Every choice a run makes; saved as config.json so that ``--resume`` continues the same run."""
    model: str = "resnet20"
    method: str = "ttq"
    start_from: str | None = None    # checkpoint to fine-tune from; None trains from scratch
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

    @classmethod
    def from_dict(cls, values: dict, where: str = "config", strict: bool = True) -> "TrainConfig":
        """A config from a saved ``config.json``: old key names are renamed; unknown keys are an error, or
        dropped with ``strict=False`` (reading an old run only to show it)."""
        values = {RENAMED_KEYS.get(k, k): v for k, v in values.items()}
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown and not strict:
            values = {k: v for k, v in values.items() if k in known}
        elif unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}: it was written by another version of "
                             f"ttq-workbook or edited by hand; the known keys are {sorted(known)}")
        return cls(**values)

    def validate(self) -> None:
        if self.model not in DEPTHS:
            raise ValueError(f"--model {self.model} is not one of {', '.join(DEPTHS)}")
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method} is not one of {', '.join(METHODS)}")
        if self.scale_init not in SCALE_INITS:
            raise ValueError(f"--scale-init {self.scale_init} is not one of {', '.join(SCALE_INITS)}")
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
        else:
            check_t(self.t)
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"--lr {self.lr} must be positive")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule {self.schedule} is not one of {', '.join(SCHEDULES)}")
        if self.start_from is not None and not Path(self.start_from).is_file():
            raise FileNotFoundError(f"--start-from {self.start_from} does not exist; give a checkpoint such as "
                                    "../shared/pretrained/resnet20-12fca82f.th or a results/ model")


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int) -> float:
    """The learning rate at (epoch, step): a pure function, so a resumed run follows the same curve."""
    if cfg.schedule == "cosine":
        progress = (epoch + step / steps_per_epoch) / cfg.epochs
        return 0.5 * cfg.lr * (1 + math.cos(math.pi * progress))
    return cfg.lr * 0.1 ** sum(epoch >= m for m in cfg.milestones)


def build(cfg: TrainConfig) -> tuple[nn.Module, dict]:
    """The model to train and its input normalisation: from scratch or from ``cfg.start_from``, then
    ternarized as ``cfg.method`` asks."""
    if cfg.start_from is None:
        model, meta = build_model(cfg.model), {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    else:
        model, meta = load_model(cfg.start_from, cfg.model)
        if meta["method"] != "fp" and meta["method"] != cfg.method:
            raise ValueError(f"--start-from {cfg.start_from} is a {meta['method']} model; fine-tune it with "
                             f"--method {meta['method']} or start from a full-precision checkpoint")
        meta = {"mean": meta["mean"], "std": meta["std"]}
    already = any(isinstance(m, TernaryMixin) for m in model.modules())
    if cfg.method != "fp" and not already:
        ternarize_model(model, method=cfg.method, t=cfg.t, sparsity=cfg.sparsity,
                        keep_first=cfg.keep_first, keep_last=cfg.keep_last, scale_init=cfg.scale_init)
    return model, meta
