"""One entry point for every model file: ``load_model`` tells the kinds apart; ``pack_checkpoint`` converts.

Kinds: this project's checkpoints and packed files (safetensors, told apart by their metadata) and
third-party pretrained ``.th``/``.pt`` files.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn as nn

from ..bitpack import check_scheme
from ..convert import ternary_like_layers
from .checkpoint import load_checkpoint, load_third_party
from .model_meta import CheckpointError
from .packed_file import is_packed_file, load_packed, save_packed


def load_model(path: str | Path, arch: str | None = None, *, decode: str = "lazy",
               map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Load any checkpoint this project knows: ours (safetensors), a packed file, or a pretrained ``.th``.

    Returns ``(model, meta)``.  ``arch``, if given, must match the checkpoint, else a clear error names both.
    Packed files (``ttq pack``) load as packed-inference models (``decode`` "lazy" or "once").
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if is_packed_file(path):
        model, meta = load_packed(path, decode=decode)
    elif path.suffix == ".safetensors":
        model, meta = load_checkpoint(path)
    else:
        model, meta = load_third_party(path)
    if arch is not None and meta["arch"] != arch:
        raise CheckpointError(f"{path} holds a {meta['arch']}, but {arch} was asked for: "
                              f"pass --model {meta['arch']} or another checkpoint")
    return model.to(map_location), meta


def load_pretrained(path: str | Path, arch: str | None = None) -> nn.Module:
    """A full-precision CIFAR ResNet from a pretrained checkpoint (e.g. ../shared/pretrained/*.th)."""
    return load_model(path, arch)[0]


def pack_checkpoint(src: str | os.PathLike, dst: str | os.PathLike, scheme: str = "base3",
                    overwrite: bool = False) -> Path:
    """Pack a ternary checkpoint (anything :func:`load_model` reads) into ``dst``.

    ``dst`` may never be ``src`` (that would replace the trainable checkpoint, latent weights and all, by an
    inference-only file), and an existing ``dst`` is replaced only with ``overwrite``.

    A full-precision source is refused rather than ternarized on the fly: ternarizing a trained network
    without fine-tuning collapses its accuracy (see ``ttq demo``), so such a file would look valid and be
    useless. Ternarize and fine-tune first, then pack the result.
    """
    check_scheme(scheme)
    src, dst = Path(src), Path(dst)
    if dst.resolve() == src.resolve() or (dst.exists() and src.exists() and dst.samefile(src)):
        raise ValueError(f"the output {dst} is the input file: packing it in place would destroy the trainable "
                         "checkpoint (its latent weights); write the packed file elsewhere")
    if dst.exists() and not overwrite:
        raise ValueError(f"{dst} already exists: pass --force (overwrite=True) to replace it, or choose another "
                         "output")
    model, meta = load_model(src)
    if not ternary_like_layers(model):
        raise ValueError(f"{src} holds a full-precision model (method={meta.get('method')!r}); packing stores "
                         "ternary codes, so ternarize and fine-tune it first (ttq_lib.ternarize_model + training, "
                         "or `ttq train`) and pack that checkpoint")
    return save_packed(model, dst, scheme=scheme, meta=meta)
