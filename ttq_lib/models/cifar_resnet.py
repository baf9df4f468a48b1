"""CIFAR-10 ResNets of He et al. 2016 (Sec. 4.2): ResNet-20/32/44/56 with option-A shortcuts.

3x3 conv 16 -> three stages of n basic blocks (16, 32, 64 channels; stride 2 at stages 2 and 3) ->
global average pooling -> linear 64 -> 10, with depth 6n + 2.  When a block changes shape, the shortcut
("option A") subsamples by 2 and zero-pads the new channels, so shortcuts have no parameters.  Parameter
names match the widely used pretrained checkpoints in ../shared/pretrained (conv1, bn1,
layer{1,2,3}.{i}.{conv1,bn1,conv2,bn2}, linear).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

DEPTHS = {"resnet20": 3, "resnet32": 5, "resnet44": 7, "resnet56": 9}


class PadShortcut(nn.Module):
    """Option-A shortcut: take every second pixel and zero-pad ``pad`` channels on each side."""

    def __init__(self, pad: int):
        super().__init__()
        self.pad = pad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Identity()
        if stride != 1 or in_planes != planes:
            self.shortcut = PadShortcut(planes // 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, n: int, num_classes: int = 10):
        super().__init__()
        self.n = n
        self.conv1 = nn.Conv2d(3, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = self._stage(16, 16, n, 1)
        self.layer2 = self._stage(16, 32, n, 2)
        self.layer3 = self._stage(32, 64, n, 2)
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    @staticmethod
    def _stage(in_planes: int, planes: int, n: int, stride: int) -> nn.Sequential:
        blocks = [BasicBlock(in_planes, planes, stride)]
        blocks += [BasicBlock(planes, planes) for _ in range(n - 1)]
        return nn.Sequential(*blocks)

    @property
    def arch(self) -> str:
        return f"resnet{6 * self.n + 2}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


def resnet20(num_classes: int = 10) -> CifarResNet:
    """ResNet-20 for CIFAR (n = 3, 0.27 M parameters)."""
    return CifarResNet(3, num_classes)


def resnet32(num_classes: int = 10) -> CifarResNet:
    """ResNet-32 for CIFAR (n = 5, 0.46 M parameters)."""
    return CifarResNet(5, num_classes)


def resnet44(num_classes: int = 10) -> CifarResNet:
    """ResNet-44 for CIFAR (n = 7, 0.66 M parameters)."""
    return CifarResNet(7, num_classes)


def resnet56(num_classes: int = 10) -> CifarResNet:
    """ResNet-56 for CIFAR (n = 9, 0.85 M parameters)."""
    return CifarResNet(9, num_classes)


def build_cifar_resnet(arch: str, num_classes: int = 10) -> CifarResNet:
    """Build a CIFAR ResNet by name: resnet20, resnet32, resnet44 or resnet56.

    ``ttq_lib.models.build_model`` builds these and torchvision's models too."""
    if arch not in DEPTHS:
        raise ValueError(f"unknown CIFAR ResNet {arch!r}; choose one of {', '.join(DEPTHS)}")
    return CifarResNet(DEPTHS[arch], num_classes)
