"""Repository-wide pytest hooks: how long each test file and each notebook took, printed at the end of a run.

The suite has a time budget (README: under 20 minutes on 2 cores, the six notebooks under 10), so every run, CI's
included, ends with the seconds per file (setup, call and teardown summed) and the notebooks' total.
"""
from collections import defaultdict

_SECONDS: dict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report):
    _SECONDS[report.nodeid.split("::")[0]] += report.duration


def pytest_terminal_summary(terminalreporter):
    if not _SECONDS:
        return
    tr = terminalreporter
    tr.section("seconds per file")
    for name, seconds in sorted(_SECONDS.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{seconds:8.1f}  {name}")
    notebooks = sum(s for name, s in _SECONDS.items() if name.endswith(".ipynb"))
    tr.write_line(f"{sum(_SECONDS.values()):8.1f}  all files; the notebooks {notebooks:.1f}")
