"""The notebooks' widget hygiene (tools/strip_widgets.py) and structure; the explorer itself: test_explorer.py."""
import importlib.util
import json
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


# ----- tools/strip_widgets.py -----------------------------------------------------------------------


def _strip_tool():
    spec = importlib.util.spec_from_file_location("strip_widgets", ROOT / "tools" / "strip_widgets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _notebook_with_widget():
    nb = nbformat.v4.new_notebook()
    cell = nbformat.v4.new_code_cell("explorer")
    cell.outputs = [nbformat.v4.new_output("display_data", data={
        "text/plain": "VBox(children=(...))",
        "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0}})]
    cell.metadata["execution"] = {"iopub.execute_input": "2025-01-01T00:00:00Z"}
    text = nbformat.v4.new_code_cell("print(1)")
    text.outputs = [nbformat.v4.new_output("stream", name="stdout", text="1\n")]
    nb.cells = [cell, text]
    nb.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}, "version_major": 2}}
    return nb


def test_strip_widgets_removes_state_and_views(tmp_path):
    tool = _strip_tool()
    path = tmp_path / "nb.ipynb"
    nbformat.write(_notebook_with_widget(), path)
    assert tool.main(["--check", str(path)]) == 1
    assert tool.main([str(path)]) == 0
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata
    assert nb.cells[0].outputs[0]["data"] == {"text/plain": tool.NOTE}
    assert "execution" not in nb.cells[0].metadata
    assert nb.cells[1].outputs[0]["text"] == "1\n"  # other outputs stay
    assert tool.main(["--check", str(path)]) == 0
    raw = path.read_text()
    assert tool.main([str(path)]) == 0 and path.read_text() == raw  # idempotent


# ----- the committed notebooks ----------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_committed_notebooks_hold_no_widget_state(path):
    nb = nbformat.read(path, as_version=4)
    assert not _strip_tool().has_widget_state(nb), f"run: python tools/strip_widgets.py {path.relative_to(ROOT)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_structure(path):
    """Numbered, ends with exercises, has NBVAL markers, and plot cells end with ';'."""
    nb = nbformat.read(path, as_version=4)
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith(f"# {path.name[:2]} ")
    assert any(c.cell_type == "markdown" and "## Exercises" in c.source for c in nb.cells)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    assert any("# NBVAL_CHECK_OUTPUT" in s for s in sources)
    for s in sources:
        if any(k in s for k in ("plots.plot_", "show_images", "plt.subplots", ".plot(")):
            last = s.strip().splitlines()[-1]
            assert last.rstrip().endswith(";"), f"{path.name}: end the plot cell with ';': {last!r}"
    json.dumps(nb)  # serialisable as it stands
