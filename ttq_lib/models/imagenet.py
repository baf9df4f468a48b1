"""The paper's ImageNet models: torchvision's AlexNet and ResNet-18, by the short names ``ttq train`` takes.

The paper (Sec. 5.2) trains AlexNet from scratch and ResNet-18 on ImageNet, keeping the first convolution and
the last fully connected layer in full precision (the official AlexNet names them ``conv0`` and ``fct``);
``ttq_lib.convert.ternarize_model`` keeps exactly those two by default (``keep_first``, ``keep_last``), which
for torchvision's models are ``features.0`` / ``classifier.6`` (AlexNet) and ``conv1`` / ``fc`` (ResNet-18).

Architectures are torchvision's as they are (AlexNet with dropout and no batch norm, ResNet-18 with batch norm),
built untrained; their checkpoints record the registry name (``torchvision.alexnet``), so ``load_model``
rebuilds them like any other model file.
"""
from __future__ import annotations

import torch.nn as nn

from .registry import TORCHVISION_PREFIX, build_model

#: ``ttq train --model NAME`` for ImageNet-style data -> the registry name its checkpoints record.
IMAGENET_MODELS = {"alexnet": TORCHVISION_PREFIX + "alexnet", "resnet18": TORCHVISION_PREFIX + "resnet18"}
#: The smallest square input each model accepts (AlexNet's three stride-2 max-pools need at least 63 pixels
#: after its stride-4 first conv; ResNet-18 ends in an adaptive pool and runs down to 32).
MIN_IMAGE_SIZE = {"alexnet": 63, "resnet18": 32}


def imagenet_arch(name: str) -> str:
    """The registry name of an ImageNet model (``alexnet`` -> ``torchvision.alexnet``); a clear error else."""
    if name not in IMAGENET_MODELS:
        raise ValueError(f"--model {name} is not an ImageNet model: choose one of {', '.join(IMAGENET_MODELS)}")
    return IMAGENET_MODELS[name]


def build_imagenet_model(name: str, num_classes: int) -> nn.Module:
    """An untrained torchvision AlexNet or ResNet-18 with ``num_classes`` outputs (1000 for ImageNet)."""
    return build_model(imagenet_arch(name), num_classes)
