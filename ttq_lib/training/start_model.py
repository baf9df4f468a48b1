"""The model a run starts from: from scratch, from a checkpoint (ours, a published ``.th`` or a torchvision
``.pth``), then ternarized as the run's method asks; options that contradict a ternary checkpoint are refused."""
from __future__ import annotations

from pathlib import Path

import torch.nn as nn

from ..convert import ternarize_model
from ..formats import load_model
from ..layers import TernaryMixin
from ..models import CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, build_model
from ..models.imagenet import build_imagenet_model, imagenet_arch
from .config import TrainConfig


def check_against_checkpoint(cfg: TrainConfig, meta: dict) -> None:
    """Refuse options that contradict the ternary checkpoint a run starts from (they would be ignored)."""
    where = f"--start-from {cfg.start_from}"
    if meta.get("format") == "ttq-packed":
        raise ValueError(f"{where} is a packed file: packed files are for inference (ttq eval, ttq size) and "
                         "hold no latent weights to train; start from the checkpoint it was packed from (the run's "
                         "last.safetensors) or from a full-precision model")
    if meta["method"] == "fp":
        return
    if meta["method"] != cfg.method:
        raise ValueError(f"{where} is a {meta['method']} model; fine-tune it with --method {meta['method']} or "
                         "start from a full-precision checkpoint")
    # TWN's rule is 0.7 * mean|w| unless a fixed sparsity is asked for: only the sparsity can contradict.
    rule = ("sparsity", cfg.sparsity) if cfg.sparsity is not None else ("t", cfg.t)
    saved = ("sparsity", meta.get("sparsity")) if meta.get("sparsity") is not None else ("t", meta.get("t"))
    if cfg.method == "twn":
        rule, saved = (rule if rule[0] == "sparsity" else None), (saved if saved[0] == "sparsity" else None)
    if rule != saved:
        def say(r):
            return "TWN's 0.7 * mean|w|" if r is None else f"--{r[0]} {r[1]}"
        raise ValueError(f"{where} was ternarized with {say(saved)}, but this run asks for {say(rule)}: pass "
                         f"{say(saved)} to fine-tune it as it is, or start from a full-precision checkpoint "
                         "to change the threshold rule")
    if cfg.scale_init != "one":
        raise ValueError(f"{where} already has trained Wp, Wn; --scale-init only applies when a full-precision "
                         "model is ternarized: drop it")
    for key, flag in (("keep_first", "--quantize-first"), ("keep_last", "--quantize-last")):
        if key in meta and bool(meta[key]) != getattr(cfg, key):
            state = "kept in full precision" if meta[key] else "ternary"
            raise ValueError(f"{where} has its {key.split('_')[1]} layer {state}; "
                             f"{'drop' if meta[key] else 'add'} {flag} to fine-tune it as it is")


def _build_imagenet(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict]:
    """An ImageNet model from scratch, from one of our checkpoints, or from a torchvision state dict (.pth,
    e.g. torchvision's pretrained ResNet-18, read with ``weights_only=True``)."""
    norm = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if cfg.start_from is None:
        return build_imagenet_model(cfg.model, num_classes), norm
    if Path(cfg.start_from).suffix == ".safetensors":
        model, meta = load_model(cfg.start_from, imagenet_arch(cfg.model))
        check_against_checkpoint(cfg, meta)
        norm = {"mean": meta["mean"], "std": meta["std"]}
    else:
        from ..formats.checkpoint import load_state_dict_file
        from ..formats.model_meta import load_checked

        sd = load_state_dict_file(cfg.start_from)
        classifier = sd.get("fc.weight" if cfg.model == "resnet18" else "classifier.6.weight")
        # built with the file's classes, so that a mismatch is reported as such below, not as a shape error
        model = build_imagenet_model(cfg.model, num_classes if classifier is None else len(classifier))
        model = load_checked(model, sd, cfg.start_from)
    if getattr(model, "num_classes", num_classes) != num_classes:
        raise ValueError(f"--start-from {cfg.start_from} has {model.num_classes} classes, the data {num_classes}: "
                         "fine-tune from a model of the same classes")
    return model, norm


def build(cfg: TrainConfig, num_classes: int = 10) -> tuple[nn.Module, dict]:
    """The model to train and its input normalisation: from scratch or from ``cfg.start_from``, then
    ternarized as ``cfg.method`` asks.  ``num_classes`` is the data's (ImageNet folders: their class count)."""
    if cfg.start_from is not None and not Path(cfg.start_from).is_file():
        raise FileNotFoundError(f"--start-from {cfg.start_from} does not exist; give a checkpoint such as "
                                "../shared/pretrained/resnet20-12fca82f.th or a results/ model")
    if cfg.dataset == "imagenet":
        model, meta = _build_imagenet(cfg, num_classes)
    elif cfg.start_from is None:
        model, meta = build_model(cfg.model), {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    else:
        model, meta = load_model(cfg.start_from, cfg.model)
        check_against_checkpoint(cfg, meta)
        meta = {"mean": meta["mean"], "std": meta["std"]}
    already = any(isinstance(m, TernaryMixin) for m in model.modules())
    if cfg.method != "fp" and not already:
        ternarize_model(model, keep_first=cfg.keep_first, keep_last=cfg.keep_last, scale_init=cfg.scale_init,
                        rule=cfg.rule)
    return model, meta
