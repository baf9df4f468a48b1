"""The input normalisation a model was trained with: part of the model, recorded in every checkpoint.

The pretrained CIFAR ResNets in ../shared/pretrained were trained on images normalised with the ImageNet
channel statistics, so fine-tuning or evaluating them must normalise the same way; a model trained from
scratch here uses CIFAR-10's own training-set statistics.  ``ttq_lib.data.normalize`` applies either pair.
"""
from __future__ import annotations

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
