"""Data: CIFAR-10 from any local form (sources), decoded once (cache), held as uint8 tensors (cifar10), and
served as augmented, normalised batches (batches).  Uses ``ttq_lib.models`` for the input normalisation and
``ttq_lib.formats`` for atomic writes; nothing about ternary quantization.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".batches": ("Batches", "augment", "crop_flip", "derived_seed", "normalize"),
    ".cache": ("default_cache_dirs",),
    ".cifar10": ("CLASSES", "CifarTensors", "channel_mean_std", "synthetic_cifar10"),
    ".sources": ("DataSourceError", "load_cifar10"),
})
