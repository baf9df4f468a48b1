"""Coursework (ttq_lib.course.assignments): the student release of the real notebooks, nbgrader markup, autograding.

The release is checked on whatever notebooks exist (no list of names here): answers gone, checks kept, every
notebook opening with objectives / prerequisites / running time and ending with a questionnaire of >= 8 answered
questions, and the student copies running under nbval in fast mode with every check reporting "not attempted".
"""
import copy
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
pytest.importorskip("nbgrader")

from ttq_lib.course import assignments  # noqa: E402
from ttq_lib.course.exercises import NOT_ATTEMPTED  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _src(cell) -> str:
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


def _solution_body(code: str) -> list[str]:
    """The model-answer lines between the solution markers (stripped, non-empty)."""
    b, e = code.index(assignments.SOLUTION_BEGIN), code.index(assignments.SOLUTION_END)
    return [ln.strip() for ln in code[b + len(assignments.SOLUTION_BEGIN):e].splitlines() if ln.strip()]


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    out = tmp_path_factory.mktemp("course")
    summary = assignments.release(ROOT / "notebooks", out)
    return out, summary


# ----- the committed notebooks ------------------------------------------------------------------------


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_notebook_follows_the_exercise_convention(path):
    nb = nbformat.read(path, as_version=4)
    assert assignments.validate_source(nb, path.name) == []
    head = _src(nb.cells[0])
    for part in ("Learning objectives", "Prerequisites", "Running time"):
        assert part in head, f"{path.name}: the first cell must state its {part}"
    answers = [c for c in nb.cells if c["cell_type"] == "markdown" and assignments.is_solution_cell(c)]
    assert len(answers) >= 8, f"{path.name}: a questionnaire of at least 8 answered questions, found {len(answers)}"
    assert all(len(_src(c).split()) >= 15 for c in answers), f"{path.name}: a model answer is (nearly) empty"
    checks = [c for c in nb.cells if assignments.is_check_cell(c)]
    assert checks, f"{path.name}: no autograded check cell"
    for cell in checks:  # the committed (instructor) run: with the answers in place every check passes
        text = "".join(o.get("text", "") for o in cell.get("outputs", []) if o.get("output_type") == "stream")
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"]
        assert text.startswith("correct:") and not errors, f"{path.name}: check {cell.metadata['nbgrader']['grade_id']}"


# ----- the release ------------------------------------------------------------------------------------


def test_release_has_no_answer_code_and_keeps_the_checks(released):
    out, summary = released
    assert set(summary["notebooks"]) == {p.name for p in NOTEBOOKS}
    for path in NOTEBOOKS:
        source = nbformat.read(path, as_version=4)
        student = nbformat.read(out / "release" / "ttq" / path.name, as_version=4)
        assert len(student.cells) == len(source.cells)
        text = json.dumps(student.cells)
        assert assignments.SOLUTION_BEGIN not in text and assignments.SOLUTION_END not in text
        for s, r in zip(source.cells, student.cells):
            if r["cell_type"] == "code":
                assert r.outputs == [] and r.execution_count is None
            m = assignments.nbgrader_meta(s)
            if assignments.is_solution_cell(s) and s["cell_type"] == "code":
                body = _solution_body(_src(s))
                assert body and not any(line in _src(r).splitlines() for line in body if len(line) > 12), \
                    f"{path.name} {m['grade_id']}: answer code left in the release"
                assert "raise NotImplementedError()" in _src(r)
                assert _src(r).splitlines()[0] == _src(s).splitlines()[0]  # the function's signature stays
            elif assignments.is_solution_cell(s):
                assert _src(r).strip() == "YOUR ANSWER HERE", f"{path.name} {m['grade_id']}: model answer released"
            elif assignments.is_check_cell(s):
                assert _src(r) == assignments.NBVAL_MARKER.sub("", _src(s)) and "check_" in _src(r)
        # the instructor copy is the notebook as committed
        assert nbformat.read(out / "source" / "ttq" / path.name, as_version=4) == source
    assert (out / "release" / "ttq" / "figures").is_dir() == (ROOT / "notebooks" / "figures").is_dir()
    config = (out / "nbgrader_config.py").read_text()
    assert 'os.environ["TTQ_GRADING"] = "1"' in config and "course_id" in config


def test_release_refuses_to_replace_unless_forced_and_never_touches_submissions(released, tmp_path):
    nb_dir = tmp_path / "nbs"
    nb_dir.mkdir()
    nbformat.write(_tiny_source(), nb_dir / "01_tiny.ipynb")
    out = tmp_path / "course"
    assignments.release(nb_dir, out)
    (out / "submitted" / "alice" / "ttq").mkdir(parents=True)
    (out / "submitted" / "alice" / "ttq" / "01_tiny.ipynb").write_text("alice's work")
    with pytest.raises(ValueError, match="already exists: pass --force"):
        assignments.release(nb_dir, out)
    assignments.release(nb_dir, out, force=True)
    assert (out / "submitted" / "alice" / "ttq" / "01_tiny.ipynb").read_text() == "alice's work"
    assert not any(p.name.startswith(".release-") for p in out.iterdir())


def test_broken_markup_is_refused_with_the_reason(tmp_path):
    nb = _tiny_source()
    bad = copy.deepcopy(nb)
    bad.cells[0].source = "def f(x):\n    return x  # the answer, but no solution markers\n"
    bad.cells[1].metadata["nbgrader"]["points"] = 0
    bad.cells[1].metadata["nbgrader"]["locked"] = False
    bad.cells[2].metadata["nbgrader"]["grade_id"] = "tiny-f"  # a duplicate of cell 0's
    problems = assignments.validate_source(bad, "bad.ipynb")
    assert any("solution markers" in p or "BEGIN SOLUTION" in p for p in problems)
    assert any("points > 0" in p for p in problems)
    assert any("must be locked" in p for p in problems)
    assert any("used twice" in p for p in problems)
    (tmp_path / "nbs").mkdir()
    nbformat.write(bad, tmp_path / "nbs" / "bad.ipynb")
    with pytest.raises(ValueError, match="nbgrader markup problems"):
        assignments.release(tmp_path / "nbs", tmp_path / "course")
    assert not (tmp_path / "course" / "release").exists()


# ----- autograding ------------------------------------------------------------------------------------


def _tiny_source():
    """Two exercises in the convention (f doubles, g triples) and one written answer."""
    nb = nbformat.v4.new_notebook()
    meta = lambda gid, **kw: {"nbgrader": {"grade_id": gid, "schema_version": 3, **kw}}  # noqa: E731
    sol = dict(grade=False, solution=True, locked=False)
    chk = lambda pts: dict(grade=True, solution=False, locked=True, points=pts)  # noqa: E731
    nb.cells = [
        nbformat.v4.new_code_cell("def f(x):\n    ### BEGIN SOLUTION\n    return 2 * x\n    ### END SOLUTION",
                                  metadata=meta("tiny-f", **sol)),
        nbformat.v4.new_code_cell("from ttq_lib.course.exercises import check_exercise\n"
                                  "print(check_exercise(f, lambda x: 2 * x, [(1.0,), (3.0,)]))",
                                  metadata=meta("tiny-f-check", **chk(2))),
        nbformat.v4.new_code_cell("def g(x):\n    ### BEGIN SOLUTION\n    return 3 * x\n    ### END SOLUTION",
                                  metadata=meta("tiny-g", **sol)),
        nbformat.v4.new_code_cell("from ttq_lib.course.exercises import check_exercise\n"
                                  "print(check_exercise(g, lambda x: 3 * x, [(1.0,)]))",
                                  metadata=meta("tiny-g-check", **chk(3))),
        nbformat.v4.new_markdown_cell("Doubling is linear, so its derivative is the constant 2 everywhere on the line.",
                                      metadata=meta("tiny-q1", grade=True, solution=True, locked=False, points=1)),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_autograde_restores_checks_and_gives_no_points_for_blank_or_tampered_work(tmp_path):
    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(_tiny_source(), nbs / "01_tiny.ipynb")
    out = tmp_path / "course"
    assignments.release(nbs, out)
    student = nbformat.read(out / "release" / "ttq" / "01_tiny.ipynb", as_version=4)
    assert "NotImplementedError" in _src(student.cells[0])
    student.cells[0].source = "def f(x):\n    return x + x"          # a right answer, the student's own way
    student.cells[3].source = 'print("correct: trust me")'            # g left blank, its check edited away
    student.cells[4].source = "It is linear."
    del student.cells[1]                                              # and f's check deleted
    sub = tmp_path / "submitted" / "01_tiny.ipynb"
    sub.parent.mkdir()
    nbformat.write(student, sub)
    grading_before = os.environ.get("TTQ_GRADING")
    res = assignments.autograde(sub, nbs, out=tmp_path / "graded.ipynb")
    by_id = {r["grade_id"]: r for r in res["cells"]}
    assert res["restored"] == ["tiny-f-check"]
    assert by_id["tiny-f-check"]["points"] == 2 and by_id["tiny-f-check"]["status"] == "passed"
    assert by_id["tiny-g-check"]["points"] == 0
    assert by_id["tiny-g-check"]["status"].startswith("ExerciseNotAttempted")  # TTQ_GRADING=1 while grading
    assert by_id["tiny-q1"]["points"] is None and by_id["tiny-q1"]["status"] == "manual"
    assert (res["points"], res["max"], res["manual"]) == (2, 5, 1)
    assert os.environ.get("TTQ_GRADING") == grading_before  # set only while the submission ran
    graded = nbformat.read(tmp_path / "graded.ipynb", as_version=4)
    assert any("ExerciseNotAttempted" in json.dumps(c.get("outputs", [])) for c in graded.cells)
    with pytest.raises(ValueError, match="never replaced"):
        assignments.autograde(sub, nbs, out=tmp_path / "graded.ipynb")
    report = assignments.render_grades([res])
    assert "01_tiny.ipynb: 2 / 5 autograded points (+ 1 to grade by hand)" in report


def test_cli_release_and_its_refusal(tmp_path, capsys):
    from ttq_lib.course.assignments_cli import main

    nbs = tmp_path / "nbs"
    nbs.mkdir()
    nbformat.write(_tiny_source(), nbs / "01_tiny.ipynb")
    args = ["release", "--notebooks", str(nbs), "--out", str(tmp_path / "c")]
    assert main(args) == 0
    assert "01_tiny.ipynb: 2 code exercise(s), 1 question(s), 6 points" in capsys.readouterr().out
    assert main(args) == 2
    assert "--force" in capsys.readouterr().err
    assert main(args + ["--force"]) == 0


# ----- the student release runs ----------------------------------------------------------------------


def test_student_release_runs_under_nbval_with_every_check_not_attempted(released, tmp_path):
    """nbval in fast mode over every released notebook; each check cell must print exactly "not attempted"."""
    out, _ = released
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    n_checks = 0
    for path in sorted((out / "release" / "ttq").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if assignments.is_check_cell(cell):  # expect exactly the not-attempted report
                cell.source = "# NBVAL_CHECK_OUTPUT\n" + cell.source
                cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=NOT_ATTEMPTED + "\n")]
                cell.execution_count = 1  # nbval refuses a reference output of a cell that never ran
                n_checks += 1
        nbformat.write(nb, run_dir / path.name)
    assert n_checks >= len(NOTEBOOKS)
    env = {**os.environ, "TTQ_FAST": "1"}
    env.pop("TTQ_GRADING", None)
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval-lax",
                           "--nbval-current-env", "--rootdir", str(run_dir), str(run_dir)],
                          capture_output=True, text=True, env=env, cwd=run_dir, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
