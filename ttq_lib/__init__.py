"""ttq_lib: Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017) in PyTorch.

Layers, from the bottom up; each module imports only from its own layer or the ones below
(``tests/test_layering.py`` checks this):

* the core, the modules beside this file: ``thresholds`` -> ``quantizers`` (Eqs. 6-8) -> ``layers`` ->
  ``convert``, and ``bitpack`` -> ``packed_layers``; torch only, no files;
* ``models``: the CIFAR ResNets and their input normalisation;
* ``formats``: every model file (checkpoints, packed files, training state) and the size report;
* ``data``: CIFAR-10 sources, the decode cache, batches and augmentation;
* ``training``: configuration, the loop, history, evaluation, batch-norm recalibration, provenance;
* ``course``: what the notebooks compute and draw (nothing else imports it);
* ``cli``: the ``ttq`` command.

The names below are imported on first use, so ``import ttq_lib.quantizers`` loads the core alone.
"""
from ._lazy import lazy_exports

__version__ = "0.1.0"

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".thresholds": ("threshold", "threshold_max", "threshold_sparsity", "threshold_twn"),
    ".quantizers": ("ternarize", "twn_ternarize", "twn_scale", "ternary_codes", "TTQFunction", "TWNFunction"),
    ".layers": ("TernaryConv2d", "TernaryLinear", "clamp_scales_"),
    ".convert": ("ternarize_model", "ternary_layers", "layer_stats"),
    ".models": ("resnet20", "resnet32", "resnet44", "resnet56", "build_model"),
    ".formats": ("load_model", "load_pretrained", "save_checkpoint", "pack_checkpoint", "size_report"),
    ".training": ("recalibrate_bn",),
})
