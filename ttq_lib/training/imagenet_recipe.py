"""The ImageNet path's settings: its recipes (AlexNet, ResNet-18) and the checks of its options.

``ttq_lib.training.config.TrainConfig`` holds the fields; this module says which values the recipes give them
and which are refused.
"""
from __future__ import annotations

from ..models.imagenet import IMAGENET_MODELS, MIN_IMAGE_SIZE

DATASETS = ("cifar10", "imagenet")
OPTIMIZERS = ("sgd", "adam")
DECODERS = ("cpu", "device")
#: The fields of the ImageNet path and their values for CIFAR runs.  config.json leaves a field out while it
#: holds this value, so a CIFAR run's config.json is what it was before these fields existed.
IMAGENET_FIELDS = {"dataset": "cifar10", "optimizer": "sgd", "adam_eps": 1e-8, "lr_decay": 0.1,
                   "image_size": 224, "eval_resize": 256, "workers": 4, "decode": "cpu", "sync_bn": False}
#: The recipes ``ttq train --dataset imagenet`` starts from (options given on the command line override them).
#: AlexNet: the official code's optimizer and schedule (../shared/TTQ_NOTES.md: Adam eps 1e-5, lr 1e-4, x0.2 at
#: epochs 56 and 64, 32 images on each of 4 GPUs = a global batch of 128); its last epoch and weight decay are
#: not in the notes: 70 epochs and 5e-6 are our choices.  ResNet-18: the paper gives no recipe; this is the
#: usual torchvision one (SGD momentum 0.9, lr 0.1 for batch 256, /10 at 30 and 60, 90 epochs, decay 1e-4).
IMAGENET_RECIPES = {
    "alexnet": {"optimizer": "adam", "adam_eps": 1e-5, "lr": 1e-4, "lr_decay": 0.2, "milestones": [56, 64],
                "epochs": 70, "batch_size": 128, "weight_decay": 5e-6},
    "resnet18": {"optimizer": "sgd", "lr": 0.1, "lr_decay": 0.1, "milestones": [30, 60], "epochs": 90,
                 "batch_size": 256, "weight_decay": 1e-4, "momentum": 0.9},
}


#: CIFAR-10's recipe (the official CIFAR script; ``TrainConfig``'s defaults).
CIFAR_RECIPE = {"epochs": 164, "batch_size": 128, "lr": 0.1, "momentum": 0.9, "weight_decay": 2e-4,
                "milestones": [82, 123, 150], "lr_decay": 0.1, "optimizer": "sgd", "adam_eps": 1e-8}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def validate_imagenet(cfg) -> None:
    """The ImageNet path's own options (see ``ttq train --help`` and README "ImageNet and multi-GPU")."""
    if cfg.model not in IMAGENET_MODELS:
        raise ValueError(f"--dataset imagenet trains {' or '.join(IMAGENET_MODELS)}, not --model {cfg.model} "
                         f"(a CIFAR ResNet for 32x32 images): pass --model resnet18 or --model alexnet")
    if cfg.data is None:
        raise ValueError("--dataset imagenet needs --data FOLDER holding train/<class>/*.JPEG and "
                         "val/<class>/*.JPEG")
    if cfg.holdout is not None or cfg.train_subset or cfg.test_subset:
        raise ValueError("--holdout, --train-subset and --test-subset apply to CIFAR-10 only: for a smaller "
                         "ImageNet run, point --data at a folder holding fewer images")
    lo = MIN_IMAGE_SIZE[cfg.model]
    if not (_is_int(cfg.image_size) and cfg.image_size >= lo):
        raise ValueError(f"--image-size {cfg.image_size} is too small for {cfg.model}: at least {lo} "
                         "pixels (the paper uses 224)")
    if not (_is_int(cfg.eval_resize) and cfg.eval_resize >= cfg.image_size):
        raise ValueError(f"--eval-resize {cfg.eval_resize} must be at least --image-size {cfg.image_size} "
                         "(evaluation resizes, then crops the centre)")
    if not (_is_int(cfg.workers) and cfg.workers >= 0):
        raise ValueError(f"--workers {cfg.workers} must be a whole number >= 0 (0 decodes in the training "
                         "process)")
    if not (0 < cfg.lr_decay <= 1 and cfg.adam_eps > 0):
        raise ValueError(f"--lr-decay {cfg.lr_decay} must be in (0, 1] and --adam-eps {cfg.adam_eps} > 0")


#: The options a recipe sets: ``ttq train`` takes them from the command line, else from the recipe.
RECIPE_FIELDS = ("epochs", "batch_size", "lr", "momentum", "weight_decay", "milestones", "lr_decay", "optimizer",
                 "adam_eps")


def recipe_values(dataset: str, model: str, given: dict) -> dict:
    """The recipe's options (:data:`RECIPE_FIELDS`): CIFAR-10's defaults, or the ImageNet model's recipe
    (:data:`IMAGENET_RECIPES`), each overridden by ``given`` (the command line's)."""
    values = dict(CIFAR_RECIPE)
    if dataset == "imagenet" and model in IMAGENET_RECIPES:
        values.update(IMAGENET_RECIPES[model])
    return {**values, **given}
