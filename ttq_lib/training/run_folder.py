"""A run folder: which files make one, and when a new run, a resume or an overwrite may use it.

See :mod:`ttq_lib.training.loop` for the order an epoch writes these files in; this module only says whether
a folder may be trained into (``--resume`` / ``--overwrite``, and the ``STOPPED`` marker of a run given up
on purpose).
"""
from __future__ import annotations

from pathlib import Path

from .config import CONFIG_FILE

#: The files a run writes; a folder holding any of them holds a run.
RUN_FILES = (CONFIG_FILE, "history.jsonl", "last.safetensors", "state.pt", "metrics.json")


class RunExistsError(ValueError):
    """The output folder already holds a run, and neither resume nor overwrite was asked for."""


def held_run_files(out: Path) -> list[str]:
    """The run files (:data:`RUN_FILES`) present in ``out``."""
    return [name for name in RUN_FILES if (out / name).exists()]


def check_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to train into a folder that holds a run unless told how (``resume`` or ``overwrite``)."""
    if resume and overwrite:
        raise ValueError("give either --resume (continue the run) or --overwrite (start it again), not both")
    held = held_run_files(out)
    if resume:
        if CONFIG_FILE not in held:
            raise FileNotFoundError(f"nothing to resume in {out}: it holds no run ({CONFIG_FILE} is missing); "
                                    "start a new run there without --resume")
        if (out / "STOPPED").exists():
            raise ValueError(f"{out} was given up on purpose ({out / 'STOPPED'} says why); it is kept as a record: "
                             "start a new run in another folder instead")
    elif held and not overwrite:
        raise RunExistsError(f"{out} already holds a run ({', '.join(held)}): pass --resume {out} to continue "
                             "it, or --overwrite to delete its run files and start again")
