"""README's speed figures against the benchmark outputs committed under results/benchmarks/.

A speed table is copied from a saved run of a benchmark script, never typed: the saved output starts with the
command and commit that made it, and each figure of README's table must be the one in that output."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CPU_RECORD = ROOT / "results" / "benchmarks" / "cpu-resnet20-train-throughput.txt"


def read_train_throughput(text: str) -> dict[tuple[str, str, str], dict[str, tuple[int, str, str]]]:
    """benchmarks/train_throughput.py's report: {(device, model, method): {variant: (images/s, median ratio,
    ratio of the fastest rounds)}}, the ratios as printed."""
    blocks, key = {}, None
    for line in text.splitlines():
        head = re.fullmatch(r"(cpu|cuda) (\S+) (fp|ttq|twn)", line)
        if head:
            key = head.groups()
            blocks[key] = {}
            continue
        row = re.fullmatch(r"\s+(\S+)\s+[\d.]+\s+(\d+)\s+([\d.]+)x\s+([\d.]+)x\s+\d+-\d+; [\d.]+", line)
        if key and row:
            blocks[key][row[1]] = (int(row[2]), row[3], row[4])
    return blocks


def test_the_reader_takes_the_scripts_rows():
    text = ("cpu resnet20 ttq\n  variant     ms/step  images/s vs eager (of mins)  min-max ms; warm-up s\n"
            "  eager         406.6       315    1.00x     1.00x  366-430; 0.9\n"
            "  cl+compile    328.8       389    1.24x     1.20x  305-342; 30.0\n")
    assert read_train_throughput(text) == {("cpu", "resnet20", "ttq"): {"eager": (315, "1.00", "1.00"),
                                                                        "cl+compile": (389, "1.24", "1.20")}}


def test_readme_cpu_throughput_table_is_the_committed_output():
    text = CPU_RECORD.read_text()
    readme = (ROOT / "README.md").read_text()
    command = re.search(r"^command: (.*)$", text, re.M)[1]
    assert f"`{command}`" in readme, "README must give the command of the committed output"
    assert re.search(r"^git commit: [0-9a-f]{40}$", text, re.M), "a record is made from a committed tree"
    blocks = read_train_throughput(text)
    for method, name in (("fp", "FP"), ("ttq", "TTQ")):
        got = blocks[("cpu", "resnet20", method)]
        cells = [f"{got['eager'][0]} images/s"] + [f"{got[v][0]} ({got[v][1]}x; {got[v][2]}x)"
                                                   for v in ("cl", "cl+compile")]
        row = f"| {name} | " + " | ".join(cells) + " |"
        assert row in readme, f"README's {name} row should read {row}"
