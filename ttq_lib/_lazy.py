"""Package plumbing: names a package re-exports, imported on first use (PEP 562).

``from ttq_lib.training.history import read_history`` must not load the training loop, yet
``from ttq_lib.training import train`` should work: each ``__init__`` lists its public names and the module
that defines them, and nothing is imported until a name is asked for.
"""
from __future__ import annotations

import importlib
import sys


def lazy_exports(package: str, modules: dict[str, tuple[str, ...]]):
    """``(__getattr__, __dir__, __all__)`` for ``package``, re-exporting ``modules``' names lazily.

    ``modules`` maps a module (relative to ``package``, such as ``".loop"``) to the names it provides.
    """
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(sys.modules[package], name, value)  # later look-ups skip this function
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(where))

    return __getattr__, __dir__, sorted(where)
