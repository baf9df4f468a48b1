"""A plan's report, the reproduction table or the search report, and the copies of it inside markdown files.

:func:`render_plan` draws a plan's results folder as what it is: a learning-rate search (every finished run
evaluated on held-out training images, :mod:`.search`) or the reproduction table (test errors against the
paper's, :mod:`.table`).

README and notebook text must not carry hand-typed numbers, so a markdown file holds the rendered report
between two markers, and ``ttq table --update FILE`` rewrites every such block from the files::

    <!-- ttq table results/cifar10 -->
    ...whatever `ttq table results/cifar10 --markdown` prints...
    <!-- /ttq table -->

The path is relative to the markdown file's folder.  :func:`stale_blocks` names the blocks that no longer
match their results (tests/test_report_blocks.py runs it on README.md).
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..formats.atomic import write_text_atomic
from .plan_results import check_one_data, eval_split, read_runs
from .search import render_search
from .table import render_table

__all__ = ["render_plan", "update_blocks", "stale_blocks", "data_note"]

BLOCK = re.compile(r"(<!-- ttq table (?P<path>\S+) -->\n)(?P<body>.*?)(<!-- /ttq table -->)", re.S)


def render_plan(plan_dir: str | os.PathLike, markdown: bool = False) -> str:
    """The search report for a plan of held-out runs, else the reproduction table."""
    render = render_search if eval_split(read_runs(plan_dir)[0]) == "holdout" else render_table
    return render(plan_dir, markdown=markdown)


def data_note(mine: str | os.PathLike, committed: str | os.PathLike) -> str | None:
    """A sentence on whether two plans' finished runs used the same data set (None if either has none)."""
    ours = check_one_data(read_runs(mine)[0], mine)
    theirs = check_one_data(read_runs(committed)[0], committed)
    if ours is None or theirs is None:
        return None
    if ours == theirs:
        return f"Both tables are of runs on {ours}: their numbers compare directly."
    return (f"Your runs used {ours}, the committed runs {theirs}: the errors of the two tables are not comparable "
            "(the JPEG copy alone costs the pretrained ResNet-20 about 11 points before adaptation); compare "
            "TTQ with the FP control within each table.")


def _render_blocks(text: str, base: Path) -> tuple[str, list[str]]:
    """``text`` with every block re-rendered, and the paths of the blocks whose text changed."""
    changed = []

    def fill(m: re.Match) -> str:
        body = render_plan(base / m["path"], markdown=True)
        if body != m["body"]:
            changed.append(m["path"])
        return m.group(1) + body + m.group(4)

    return BLOCK.sub(fill, text), changed


def update_blocks(path: str | os.PathLike) -> list[str]:
    """Re-render every block of the markdown file ``path`` in place (atomically); the paths of changed blocks.

    A file without a block is an error (a misspelt marker would otherwise do nothing silently)."""
    path = Path(path)
    text = path.read_text()
    if not BLOCK.search(text):
        raise ValueError(f"{path} holds no '<!-- ttq table PATH -->' ... '<!-- /ttq table -->' block to update")
    new, changed = _render_blocks(text, path.parent)
    if changed:
        write_text_atomic(path, new)
    return changed


def stale_blocks(path: str | os.PathLike) -> list[str]:
    """The paths of the blocks of ``path`` whose text differs from their results' rendering now."""
    path = Path(path)
    return _render_blocks(path.read_text(), path.parent)[1]
