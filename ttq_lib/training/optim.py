"""The optimizer of a run: parameter groups (weight decay where the recipe puts it; TTQ's Wp, Wn apart when they
have their own learning rate), SGD with momentum or Adam, and the learning rate of every group at each step."""
from __future__ import annotations

import torch
import torch.nn as nn

from .config import TrainConfig, learning_rate


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
