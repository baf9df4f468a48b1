#!/usr/bin/env python
"""Remove ipywidgets state (and execution timestamps) from notebooks before committing them.

Executing a notebook that shows a widget (notebook 01's threshold explorer) stores the state of every widget
model in ``metadata.widgets`` and a widget view in the cell's output. Without a running kernel the view can't
be rendered anyway, and the state is large and changes on every run. This script removes both, replaces the
output of a widget cell by a one-line note, and drops the per-cell ``metadata.execution`` timestamps that
nbclient records. Other outputs (text, tables, figures) stay.

    python tools/strip_widgets.py                    # every notebooks/*.ipynb, in place
    python tools/strip_widgets.py path/to/a.ipynb    # given notebooks
    python tools/strip_widgets.py --check            # exit 1 if a notebook still has widget state
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_STATE = "application/vnd.jupyter.widget-state+json"
NOTE = "[interactive widget: run the notebook with a live kernel to use it]"


def strip(nb: nbformat.NotebookNode) -> bool:
    """Strip ``nb`` in place; returns True if anything changed."""
    changed = nb.metadata.pop("widgets", None) is not None
    for cell in nb.cells:
        if cell.metadata.pop("execution", None) is not None:
            changed = True
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            data = out.get("data")
            if not data or not (WIDGET_VIEW in data or WIDGET_STATE in data):
                continue
            out["data"] = {"text/plain": NOTE}
            changed = True
    return changed


def has_widget_state(nb: nbformat.NotebookNode) -> bool:
    """True if ``nb`` still holds widget state or widget views."""
    if "widgets" in nb.metadata:
        return True
    return any(WIDGET_VIEW in out.get("data", {}) or WIDGET_STATE in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.get("outputs", []))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="notebooks (default: notebooks/*.ipynb)")
    parser.add_argument("--check", action="store_true", help="only report; exit 1 if a notebook has widget state")
    args = parser.parse_args(argv)
    paths = args.paths or sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
    dirty = []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if args.check:
            if has_widget_state(nb):
                dirty.append(path)
        elif strip(nb):
            nbformat.write(nb, path)
            print(f"stripped {path}")
    if dirty:
        print("widget state left in: " + ", ".join(map(str, dirty)) + " (run tools/strip_widgets.py)",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
