"""Build a model by name: the CIFAR ResNets of this package, or any torchvision classification model.

Model files record this name (their ``arch``), so every architecture ``build_model`` knows can be saved and
rebuilt by :mod:`ttq_lib.formats`.  Torchvision models are named ``"torchvision.<name>"`` (for example
``"torchvision.resnet18"``) and built untrained; ``ternarize_model`` then converts them like any torch model.
"""
from __future__ import annotations

import difflib

import torch.nn as nn

from .cifar_resnet import DEPTHS, build_cifar_resnet

#: How a torchvision classification model is named: this prefix, then its torchvision name.
TORCHVISION_PREFIX = "torchvision."


class UnknownArchitectureError(ValueError):
    """``build_model`` was asked for a name it does not know."""


def known_architectures() -> str:
    """What ``build_model`` accepts, in words (for error messages)."""
    return (f"{', '.join(DEPTHS)} (CIFAR ResNets) or {TORCHVISION_PREFIX}<name> for a torchvision classification "
            f"model, e.g. {TORCHVISION_PREFIX}resnet18 (names: torchvision.models.list_models())")


def _build_torchvision(name: str, num_classes: int) -> nn.Module:
    # Imported here: torchvision takes seconds to import, and the CIFAR ResNets never need it.
    import torchvision.models as tvm

    known = tvm.list_models(module=tvm)  # classification models only, not detection or segmentation
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" (did you mean {' or '.join(TORCHVISION_PREFIX + c for c in close)}?)" if close else ""
        raise UnknownArchitectureError(f"unknown architecture {TORCHVISION_PREFIX + name!r}: torchvision has no "
                                       f"classification model {name!r}{hint}; choose one of {known_architectures()}")
    model = tvm.get_model(name, weights=None, num_classes=num_classes)
    # Recorded by model_meta, so a checkpoint of this model names what rebuilds it.
    model.arch = TORCHVISION_PREFIX + name
    model.num_classes = num_classes
    return model


def build_model(arch: str, num_classes: int = 10) -> nn.Module:
    """Build an untrained model by name: resnet20/32/44/56 (CIFAR) or ``"torchvision.<name>"``.

    ``num_classes`` is the width of the classifier (10 for CIFAR-10).  Torchvision models are built without
    pretrained weights; their ``arch`` attribute is set to the name they were built from.
    """
    if arch in DEPTHS:
        return build_cifar_resnet(arch, num_classes)
    if isinstance(arch, str) and arch.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(arch[len(TORCHVISION_PREFIX):], num_classes)
    raise UnknownArchitectureError(f"unknown architecture {arch!r}; choose one of {known_architectures()}")
