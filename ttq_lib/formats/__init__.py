"""File formats: trainable checkpoints, packed ternary files, third-party ``.th`` files, a run's training
state, and the per-layer size report.  The only code that reads or writes model files; uses the core and
``ttq_lib.models`` (to rebuild an architecture), nothing above.
"""
from .._lazy import lazy_exports

__getattr__, __dir__, __all__ = lazy_exports(__name__, {
    ".atomic": ("atomic_path", "write_json_atomic", "write_text_atomic"),
    ".checkpoint": ("save_checkpoint", "save_training_state", "load_training_state"),
    ".loading": ("load_model", "load_pretrained", "pack_checkpoint"),
    ".model_meta": ("CheckpointError", "build_from_meta", "model_meta"),
    ".packed_file": ("PackedFileError", "is_packed_file", "load_packed", "read_packed_metadata", "save_packed"),
    ".size": ("FORMATS", "SizeReport", "size_report", "ternary_entropy_bits"),
})
