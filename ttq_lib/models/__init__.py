"""Model architectures: the CIFAR-10 ResNets of He et al. (2016) the paper ternarizes, and the input
normalisation each model expects.  Uses torch only; the ternary layers are put in by ``ttq_lib.convert``.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".cifar_resnet": ("DEPTHS", "CifarResNet", "build_model", "resnet20", "resnet32", "resnet44", "resnet56"),
    ".normalization": ("IMAGENET_MEAN", "IMAGENET_STD", "CIFAR10_MEAN", "CIFAR10_STD"),
})
