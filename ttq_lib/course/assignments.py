"""Coursework: the student release of the notebooks (model answers removed) and a database-free autograder.

The committed notebooks are the instructor's version ("source" in nbgrader's words): every exercise holds its
model answer between ``### BEGIN SOLUTION`` / ``### END SOLUTION`` in a cell whose metadata marks it as an
nbgrader solution cell, and is followed by a locked, autograded check cell (:mod:`ttq_lib.course.exercises`);
every questionnaire answer is a markdown solution cell.  ``ttq-course release`` runs nbgrader's own
``ClearSolutions`` and ``ClearOutput`` preprocessors over each notebook, which is what ``nbgrader
generate_assignment`` does to them, without its database, and lays the result out as an nbgrader course
directory::

    course/                       (ignored by git)
      nbgrader_config.py          course id, TTQ_GRADING=1 and fast mode for nbgrader's autograder
      source/<assignment>/        the instructor notebooks, with answers (what nbgrader generates from)
      release/<assignment>/       the student notebooks: answers replaced by stubs, outputs cleared

so an instructor can hand out ``release/<assignment>`` directly or continue with nbgrader's own commands.
``ttq-course autograde`` grades submitted notebooks without nbgrader's database: it restores the instructor's
check cells (a student cannot edit them away), runs the notebook with ``TTQ_GRADING=1`` so an unattempted
exercise fails its check, and gives each check cell its points when it ran without an error.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import time
from pathlib import Path

from ..formats.atomic import write_text_atomic
from .exercises import ENV_GRADING

SOLUTION_BEGIN, SOLUTION_END = "### BEGIN SOLUTION", "### END SOLUTION"
COURSE_ID = "ttq-workbook"
DEFAULT_ASSIGNMENT = "ttq"
NBVAL_MARKER = re.compile(r"^# NBVAL_\w+[ \t]*\n?", re.MULTILINE)

NBGRADER_CONFIG = '''"""nbgrader configuration for the ttq-workbook course (written by `ttq-course release`)."""
import os

# Check cells raise instead of printing "not attempted yet" while grading, so a blank answer earns no points;
# notebooks run on small subsets (fast mode), which the checks do not depend on.
os.environ["{grading}"] = "1"
os.environ.setdefault("TTQ_FAST", "1")

c = get_config()  # noqa: F821 (provided by nbgrader)
c.CourseDirectory.course_id = "{course}"
c.Execute.timeout = 600           # seconds per cell; live training cells take a while on a CPU
'''


def _need_nbformat():
    import nbformat
    return nbformat


def nbgrader_meta(cell) -> dict:
    """The cell's ``nbgrader`` metadata, or {} for an ordinary cell."""
    return dict(cell.get("metadata", {}).get("nbgrader", {}) or {})


def is_check_cell(cell) -> bool:
    """An autograded check: a code cell with ``grade`` and without ``solution``."""
    m = nbgrader_meta(cell)
    return cell["cell_type"] == "code" and bool(m.get("grade")) and not m.get("solution")


def is_solution_cell(cell) -> bool:
    return bool(nbgrader_meta(cell).get("solution"))


def _source(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def validate_source(nb, name: str = "notebook") -> list[str]:
    """Problems with a notebook's nbgrader markup (empty list: none).

    Checked: every grade_id is unique and present; a code solution cell holds the solution markers in order;
    a graded cell has positive integer points; a check cell is locked; schema version 3.
    """
    problems, seen = [], set()
    for i, cell in enumerate(nb.cells):
        m = nbgrader_meta(cell)
        if not m:
            continue
        where = f"{name}, cell {i} ({m.get('grade_id', 'no grade_id')})"
        gid = m.get("grade_id")
        if not gid:
            problems.append(f"{where}: nbgrader cell without a grade_id")
        elif gid in seen:
            problems.append(f"{where}: grade_id {gid!r} is used twice")
        seen.add(gid)
        if m.get("schema_version") != 3:
            problems.append(f"{where}: schema_version must be 3")
        src = _source(cell)
        if cell["cell_type"] == "code" and m.get("solution"):
            b, e = src.find(SOLUTION_BEGIN), src.find(SOLUTION_END)
            if b < 0 or e < b:
                problems.append(f"{where}: a code solution cell needs '{SOLUTION_BEGIN}' ... '{SOLUTION_END}'")
        if m.get("grade"):
            pts = m.get("points")
            if not isinstance(pts, int) or pts <= 0:
                problems.append(f"{where}: a graded cell needs integer points > 0, got {pts!r}")
        if is_check_cell(cell) and not m.get("locked"):
            problems.append(f"{where}: a check cell must be locked")
        if cell["cell_type"] == "markdown" and m.get("solution") and not src.strip():
            problems.append(f"{where}: a markdown answer cell holds no model answer")
    return problems


def student_version(nb):
    """The student's copy of an instructor notebook: nbgrader's ClearSolutions and ClearOutput, then the
    ``# NBVAL_...`` markers dropped (they compare outputs a student's copy no longer has)."""
    from nbgrader.preprocessors import ClearOutput, ClearSolutions

    nb = copy.deepcopy(nb)
    resources: dict = {}
    nb, resources = ClearSolutions(enforce_metadata=True).preprocess(nb, resources)
    nb, resources = ClearOutput().preprocess(nb, resources)
    for cell in nb.cells:
        if cell["cell_type"] == "code":
            cell["source"] = NBVAL_MARKER.sub("", _source(cell))
    return nb


def _notebooks(folder: Path) -> list[Path]:
    found = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not found:
        raise ValueError(f"no notebooks (*.ipynb) in {folder}: pass --notebooks FOLDER")
    return found


def _copy_assets(src: Path, dst: Path) -> None:
    """Folders beside the notebooks (figures/ ...) that the notebooks show, copied along."""
    for p in sorted(src.iterdir()):
        if p.is_dir() and not p.name.startswith(".") and p.name != "__pycache__":
            shutil.copytree(p, dst / p.name, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))


def release(notebooks: str | os.PathLike, out: str | os.PathLike, assignment: str = DEFAULT_ASSIGNMENT,
            force: bool = False) -> dict:
    """Write the nbgrader course directory ``out`` (layout in the module docstring) from ``notebooks``.

    Refuses (ValueError) notebooks with broken nbgrader markup, and an existing ``out/source/<assignment>``
    or ``out/release/<assignment>`` unless ``force``; other folders of ``out`` (nbgrader's ``submitted``,
    ``autograded``, ``gradebook.db``) are never touched.  Returns what was written.
    """
    nbformat = _need_nbformat()
    src_dir, out = Path(notebooks), Path(out)
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", assignment):
        raise ValueError(f"assignment name {assignment!r}: use letters, digits, '-', '_' or '.'")
    paths = _notebooks(src_dir)
    books = {p: nbformat.read(p, as_version=4) for p in paths}
    problems = [msg for p, nb in books.items() for msg in validate_source(nb, p.name)]
    if problems:
        raise ValueError("nbgrader markup problems, fix them in the source notebooks:\n  " + "\n  ".join(problems))
    source, student = out / "source" / assignment, out / "release" / assignment
    existing = [d for d in (source, student) if d.exists()]
    if existing and not force:
        raise ValueError(f"{existing[0]} already exists: pass --force to replace the released notebooks "
                         "(submissions, autograded work and the gradebook are never touched)")
    t0 = time.perf_counter()
    summary = {"source": str(source), "release": str(student), "notebooks": {}}
    staging = out / f".release-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for d in ("source", "release"):
            (staging / d).mkdir(parents=True)
            _copy_assets(src_dir, staging / d)
        for p, nb in books.items():
            nbformat.write(nb, staging / "source" / p.name)
            nbformat.write(student_version(nb), staging / "release" / p.name)
            cells = [nbgrader_meta(c) for c in nb.cells]
            summary["notebooks"][p.name] = {
                "exercises": sum(1 for c in nb.cells if is_check_cell(c)),
                "questions": sum(1 for c in nb.cells if c["cell_type"] == "markdown" and is_solution_cell(c)),
                "points": sum(m.get("points", 0) for m in cells if m.get("grade")),
            }
        # swap the finished folders in only now: a failure above leaves any earlier release as it was
        for d, target in (("source", source), ("release", student)):
            if target.exists():
                shutil.rmtree(target)
            target.parent.mkdir(parents=True, exist_ok=True)
            (staging / d).rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    config = out / "nbgrader_config.py"
    if not config.exists():
        write_text_atomic(config, NBGRADER_CONFIG.format(grading=ENV_GRADING, course=COURSE_ID))
    summary["seconds"] = time.perf_counter() - t0
    return summary


def restore_checks(submitted, source) -> list[str]:
    """Put the instructor's check cells (by grade_id) back into a submitted notebook, in place.

    Returns the grade_ids of check cells missing from the submission; they are inserted after the cell that
    precedes them in the source (or at the end), so a deleted check still runs and scores.
    """
    checks = {nbgrader_meta(c)["grade_id"]: (i, c) for i, c in enumerate(source.cells) if is_check_cell(c)}
    present = {}
    for cell in submitted.cells:
        gid = nbgrader_meta(cell).get("grade_id")
        if gid in checks:
            cell["source"] = _source(checks[gid][1])
            cell["metadata"]["nbgrader"] = copy.deepcopy(checks[gid][1]["metadata"]["nbgrader"])
            cell["cell_type"] = "code"
            present[gid] = True
    missing = [gid for gid in checks if gid not in present]
    for gid in missing:
        i, cell = checks[gid]
        before = nbgrader_meta(source.cells[i - 1]).get("grade_id") if i > 0 else None
        at = next((k + 1 for k, c in enumerate(submitted.cells)
                   if before and nbgrader_meta(c).get("grade_id") == before), len(submitted.cells))
        submitted.cells.insert(at, copy.deepcopy(cell))
    return missing


def score(nb) -> list[dict]:
    """Per graded cell of an executed notebook: grade_id, points earned, points possible, status."""
    rows = []
    for cell in nb.cells:
        m = nbgrader_meta(cell)
        if not m.get("grade"):
            continue
        row = {"grade_id": m["grade_id"], "max": m.get("points", 0)}
        if is_check_cell(cell):
            errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
            row["points"] = 0 if errors else row["max"]
            row["status"] = f"{errors[0]['ename']}: {errors[0]['evalue']}"[:200] if errors else "passed"
        else:
            row["points"], row["status"] = None, "manual"   # a written answer: the instructor grades it
        rows.append(row)
    return rows


def autograde(submission: str | os.PathLike, source_dir: str | os.PathLike, fast: bool = True,
              timeout: int = 600, out: str | os.PathLike | None = None) -> dict:
    """Grade one submitted notebook against the instructor notebook of the same name in ``source_dir``.

    Runs it (working directory: the submission's folder) with ``TTQ_GRADING=1`` and, when ``fast``,
    ``TTQ_FAST=1``; a cell that raises does not stop the run.  Writes the executed notebook to ``out`` when
    given (refusing to replace a file).  Returns ``{"notebook", "cells": score rows, "points", "max",
    "manual", "seconds"}``.
    """
    nbformat = _need_nbformat()
    from nbconvert.preprocessors import ExecutePreprocessor

    submission, source_dir = Path(submission), Path(source_dir)
    src_path = source_dir / submission.name
    if not src_path.is_file():
        raise ValueError(f"no instructor notebook {src_path} for the submission {submission}: "
                         "pass --source FOLDER holding the notebooks of that name")
    if out is not None and Path(out).exists():
        raise ValueError(f"{out} already exists: graded notebooks are never replaced; choose another --out folder")
    nb = nbformat.read(submission, as_version=4)
    missing = restore_checks(nb, nbformat.read(src_path, as_version=4))
    env = {ENV_GRADING: "1", **({"TTQ_FAST": "1"} if fast else {})}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)  # the kernel inherits this process's environment
    t0 = time.perf_counter()
    try:
        ExecutePreprocessor(timeout=timeout, allow_errors=True).preprocess(
            nb, {"metadata": {"path": str(submission.parent.resolve())}})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    rows = score(nb)
    if out is not None:
        write_text_atomic(Path(out), nbformat.writes(nb))
    auto = [r for r in rows if r["points"] is not None]
    return {"notebook": submission.name, "cells": rows, "restored": missing,
            "points": sum(r["points"] for r in auto), "max": sum(r["max"] for r in auto),
            "manual": sum(r["max"] for r in rows if r["points"] is None),
            "seconds": time.perf_counter() - t0}


def render_grades(results: list[dict]) -> str:
    """A plain-text report of :func:`autograde` results."""
    lines = []
    for res in results:
        lines.append(f"{res['notebook']}: {res['points']} / {res['max']} autograded points"
                     f" (+ {res['manual']} to grade by hand), {res['seconds']:.0f} s")
        for r in res["cells"]:
            pts = "manual" if r["points"] is None else f"{r['points']}/{r['max']}"
            lines.append(f"  {r['grade_id']:28s} {pts:>7s}  {r['status']}")
        if res["restored"]:
            lines.append(f"  restored deleted check cells: {', '.join(res['restored'])}")
    return "\n".join(lines) + "\n"


def dump_json(results: list[dict]) -> str:
    return json.dumps(results, indent=1)
