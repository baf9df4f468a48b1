"""``ttq-course release`` and ``ttq-course autograde``: the instructor's commands (:mod:`.assignments`).

A command of its own (``[project.scripts]``), not a ``ttq`` subcommand: the ``ttq`` command line may not import the
course layer (tests/test_layering.py).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .workbook import find_repo_root


def _add_actions(csub) -> None:
    """The two actions: release and autograde."""
    r = csub.add_parser("release", help="write an nbgrader course folder: source/ (answers) and release/ (students)",
                        description="Runs nbgrader's ClearSolutions and ClearOutput over every notebook and writes "
                                    "OUT/source/ASSIGNMENT (the notebooks as they are) and OUT/release/ASSIGNMENT "
                                    "(answers replaced by stubs, outputs cleared), with figures, plus "
                                    "OUT/nbgrader_config.py for nbgrader's own commands.")
    r.add_argument("--notebooks", default=None, help="folder of instructor notebooks (default: the checkout's notebooks/)")
    r.add_argument("--out", default=None, help="course folder (default: course/ in the checkout; ignored by git)")
    r.add_argument("--assignment", default="ttq", help="assignment name, nbgrader's folder name (default: ttq)")
    r.add_argument("--force", action="store_true",
                   help="replace an earlier release (only source/ASSIGNMENT and release/ASSIGNMENT)")
    r.set_defaults(func=cmd_release)
    a = csub.add_parser("autograde", help="run submitted notebooks with TTQ_GRADING=1 and score their checks",
                        description="For each submitted notebook: restore the instructor's check cells, run it "
                                    "(fast mode unless --full) with TTQ_GRADING=1, so that an unattempted exercise "
                                    "fails, and give each check cell its points when it ran without an error. "
                                    "Questionnaire answers are listed for grading by hand.")
    a.add_argument("submissions", nargs="+", help="submitted .ipynb files, or folders holding them")
    a.add_argument("--source", default=None, help="folder of instructor notebooks (default: the checkout's notebooks/)")
    a.add_argument("--out", default=None, help="folder for the executed, graded notebooks (must not exist)")
    a.add_argument("--full", action="store_true", help="run in full mode (default: TTQ_FAST=1)")
    a.add_argument("--timeout", type=int, default=600, help="seconds per cell (default 600)")
    a.add_argument("--json", action="store_true", help="print the scores as JSON")
    a.set_defaults(func=cmd_autograde)


def _notebooks_dir(arg: str | None) -> Path:
    return Path(arg) if arg else find_repo_root() / "notebooks"


def cmd_release(args) -> int:
    from .assignments import release

    out = Path(args.out) if args.out else find_repo_root() / "course"
    res = release(_notebooks_dir(args.notebooks), out, assignment=args.assignment, force=args.force)
    for name, n in res["notebooks"].items():
        print(f"{name}: {n['exercises']} code exercise(s), {n['questions']} question(s), {n['points']} points")
    print(f"instructor notebooks: {res['source']}\nstudent notebooks:    {res['release']}  ({res['seconds']:.1f} s)")
    return 0


def _submitted(paths: list[str]) -> list[Path]:
    found = []
    for p in map(Path, paths):
        if p.is_dir():
            found += sorted(q for q in p.glob("*.ipynb") if not q.name.startswith("."))
        elif p.suffix == ".ipynb" and p.is_file():
            found.append(p)
        else:
            raise ValueError(f"{p} is neither a .ipynb file nor a folder holding them")
    if not found:
        raise ValueError(f"no notebooks among {paths}")
    return found


def cmd_autograde(args) -> int:
    from .assignments import autograde, dump_json, render_grades

    subs = _submitted(args.submissions)
    out = Path(args.out) if args.out else None
    if out is not None:
        if out.exists():
            raise ValueError(f"{out} already exists: graded notebooks are never replaced; choose another --out")
        out.mkdir(parents=True)
    results = [autograde(s, _notebooks_dir(args.source), fast=not args.full, timeout=args.timeout,
                         out=out / s.name if out else None) for s in subs]
    print(dump_json(results) if args.json else render_grades(results), end="\n" if args.json else "")
    return 0


def main(argv=None) -> int:
    """``ttq-course ACTION ...`` (a command of its own: the ``ttq`` command line sits below the course layer)."""
    parser = argparse.ArgumentParser(prog="ttq-course", description="Coursework: release the student notebooks, "
                                     "autograde submissions (see README, 'Assignments (instructors)').")
    sub = parser.add_subparsers(dest="command", required=True, metavar="ACTION")
    _add_actions(sub)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"ttq-course {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # python -m ttq_lib.course.assignments_cli release ...
    sys.exit(main())
