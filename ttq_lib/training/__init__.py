"""Training: a run's configuration and schedule, the loop with its per-epoch history, evaluation, batch-norm
recalibration and provenance.  Uses the core, ``models``, ``formats`` and ``data``; nothing above.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".bn_recalibration": ("recalibrate_bn", "recalibrate_bn_on"),
    ".config": ("METHODS", "TrainConfig", "learning_rate"),
    ".start_model": ("build",),
    ".evaluate": ("accuracy", "predict_logits", "time_forward"),
    ".history": ("layer_names", "layer_series", "network_shares", "read_history", "weight_histograms"),
    ".devices": ("device_label", "resolve_device"),
    ".loop": ("train",),
    ".optim": ("make_optimizer", "param_groups"),
    ".step": ("train_step",),
    ".tasks": ("CifarTask", "ImageFolderTask", "open_task"),
})
