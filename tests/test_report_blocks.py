"""`ttq table --update FILE`: the rendered reports inside markdown files, and README's blocks kept current."""
from pathlib import Path

import pytest

from ttq_lib.cli import main
from ttq_lib.reproduction.report import render_plan, stale_blocks, update_blocks
from test_reproduction_search import write_run

ROOT = Path(__file__).resolve().parents[1]


def test_update_fills_each_block_from_its_results_and_then_is_current(tmp_path, capsys):
    plan = tmp_path / "results" / "lr"
    write_run(plan, "resnet20-twn-lr0.05-s0", "twn", 88.0, lr=0.05)
    write_run(plan, "resnet20-twn-lr0.1-s0", "twn", 86.0, lr=0.1)
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n<!-- ttq table results/lr -->\nhand-typed 99.9 %\n<!-- /ttq table -->\noutro\n")
    assert stale_blocks(doc) == ["results/lr"]
    assert main(["table", "--update", str(doc)]) == 0
    assert "updated results/lr" in capsys.readouterr().out
    text = doc.read_text()
    report = render_plan(plan, markdown=True)
    assert "| ResNet-20 | TWN | twn-lr0.05 | 0.05 | 4 | 88.00 (n=1) | best |" in report
    assert text == f"intro\n<!-- ttq table results/lr -->\n{report}<!-- /ttq table -->\noutro\n"
    assert stale_blocks(doc) == [] and update_blocks(doc) == []
    write_run(plan, "resnet20-twn-lr0.2-s0", "twn", 89.0, lr=0.2)  # a new result makes the block stale
    assert stale_blocks(doc) == ["results/lr"]


def test_update_refuses_a_file_without_blocks_and_a_results_dir_beside_it(tmp_path):
    doc = tmp_path / "doc.md"
    doc.write_text("<!-- ttq table results/lr --> on one line <!-- /ttq table -->\n")
    assert main(["table", "--update", str(doc)]) == 2
    assert doc.read_text().endswith("<!-- /ttq table -->\n")  # untouched
    with pytest.raises(ValueError, match="holds no"):
        update_blocks(doc)
    assert main(["table", str(tmp_path), "--update", str(doc)]) == 2


def test_readme_blocks_match_the_committed_results():
    """Every report in README.md is what `ttq table --markdown` renders from results/ now: no hand-typed
    numbers, and none left stale when a run lands (fix: ttq table --update README.md)."""
    assert stale_blocks(ROOT / "README.md") == []
