"""How a :class:`~ttq_lib.training.config.TrainConfig` field is declared, once: its default, help text, group and
check.  ``ttq train``'s options, a plan's allowed keys and the runner's execution settings are made from these.

Groups: ``recipe`` (what the run computes), ``execution`` (how it runs: may differ between the sessions that
continue one run) and ``path`` (input files: config.json stores them relative to the run folder).
"""
from __future__ import annotations

import dataclasses
from dataclasses import MISSING, field
from typing import Any, Callable

GROUPS = ("recipe", "execution", "path")


def setting(default: Any = MISSING, help: str = "", *, group: str = "recipe", factory: Callable | None = None,
            choices: tuple | None = None, check: Callable | None = None, runner_sets: bool = False,
            cli: dict | bool = True) -> Any:
    """A TrainConfig field.  ``choices``: the values allowed (checked, and ``ttq train``'s choices); ``check(cfg,
    value)``: raise a ValueError naming the problem and the fix; ``runner_sets``: ``ttq reproduce`` sets it for
    every run, so a plan's recipe may not; ``cli``: how ``ttq train`` spells it (``flag``, ``default``,
    ``metavar``, ``action``, ``type``, ``choices``, ``section``, ``exclusive``, ``invert``, ``recipe``), or False
    for no option."""
    if group not in GROUPS:
        raise ValueError(f"group {group!r} is not one of {GROUPS}")
    meta = {"help": help, "group": group, "choices": choices, "check": check, "runner_sets": runner_sets,
            "cli": {} if cli is True else cli}
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


def flag(f: dataclasses.Field) -> str:
    """The field's ``ttq train`` option (``--batch-size``), also used in error messages."""
    cli = f.metadata.get("cli") or {}
    return cli.get("flag", "--" + f.name.replace("_", "-"))


def names(cls, group: str | None = None, runner_sets: bool | None = None) -> tuple[str, ...]:
    """The fields of ``cls`` in ``group`` (all when None), or those the runner sets (or not)."""
    return tuple(f.name for f in dataclasses.fields(cls)
                 if (group is None or f.metadata.get("group") == group)
                 and (runner_sets is None or f.metadata.get("runner_sets", False) == runner_sets))


def check_fields(cfg) -> None:
    """Each field's own check: its ``choices``, then its ``check``."""
    for f in dataclasses.fields(cfg):
        value, choices = getattr(cfg, f.name), f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"{flag(f)} {value} is not one of {', '.join(map(str, choices))}")
        if f.metadata.get("check") is not None:
            f.metadata["check"](cfg, value)
