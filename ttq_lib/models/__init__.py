"""Model architectures: the CIFAR-10 ResNets of He et al. (2016) the paper ternarizes, a registry that also
builds torchvision's classification models by name, and the input normalisation each model expects.
Torch (and torchvision, imported only when asked for) only; ``ttq_lib.convert`` puts in the ternary layers.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".cifar_resnet": ("DEPTHS", "CifarResNet", "build_cifar_resnet", "resnet20", "resnet32", "resnet44", "resnet56"),
    ".imagenet": ("IMAGENET_MODELS", "build_imagenet_model", "imagenet_arch"),
    ".normalization": ("IMAGENET_MEAN", "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD"),
    ".registry": ("TORCHVISION_PREFIX", "UnknownArchitectureError", "build_model", "known_architectures"),
})
