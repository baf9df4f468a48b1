"""Exercise checks for the notebooks: a student's function compared with ttq_lib's, by value.

Every exercise is written once, with its model answer between nbgrader's ``### BEGIN SOLUTION`` /
``### END SOLUTION`` markers; the student release (``ttq-course release``) replaces the answer with
``raise NotImplementedError()``.  The check cell after it calls :func:`check_exercise` (same values as
ttq_lib's function) or :func:`check_property` (a property the task states, e.g. "a share r of zeros"), so the
checks work with or without nbgrader:

* an answer that is not written yet (it raises ``NotImplementedError`` or returns ``None``) reports
  "not attempted yet", so a student's notebook runs from top to bottom; when grading (``TTQ_GRADING=1``,
  set by ``ttq-course autograde``) it raises :class:`ExerciseNotAttempted` instead, and earns no points;
* a wrong answer raises :class:`ExerciseMismatch` naming the first case that differs;
* a right one returns ``"correct: ..."``.
"""
from __future__ import annotations

import os
from typing import Callable, Sequence

import torch

__all__ = ["ENV_GRADING", "ExerciseMismatch", "ExerciseNotAttempted", "NOT_ATTEMPTED", "check_exercise",
           "check_property", "grading"]

ENV_GRADING = "TTQ_GRADING"
NOT_ATTEMPTED = "not attempted yet: fill in the function above and run this cell again"


class ExerciseMismatch(AssertionError):
    """A student's answer differs from ttq_lib's.

    Raised explicitly rather than by ``assert``, which ``python -O`` strips (every answer would then be
    "correct"); an AssertionError subclass so notebooks and ``except AssertionError`` behave as before."""


class ExerciseNotAttempted(AssertionError):
    """Raised instead of reporting "not attempted yet" while grading (``TTQ_GRADING=1``): no points."""


def grading() -> bool:
    """True when ``TTQ_GRADING`` is set to a true value (1, true, yes, on)."""
    return os.environ.get(ENV_GRADING, "").strip().lower() in ("1", "true", "yes", "on")


class _NotAttempted(Exception):
    pass


def _call(student: Callable, args: tuple):
    """The student's output; :class:`_NotAttempted` for nbgrader's stub or a function still returning None."""
    try:
        got = student(*args)
    except NotImplementedError:
        raise _NotAttempted from None
    if got is None:
        raise _NotAttempted
    return got


def _not_attempted() -> str:
    if grading():
        raise ExerciseNotAttempted(f"{NOT_ATTEMPTED} ({ENV_GRADING} is set: no points)")
    return NOT_ATTEMPTED


def _as_tuple(x) -> tuple:
    return tuple(x) if isinstance(x, (tuple, list)) else (x,)


def _outputs(student: Callable, cases: Sequence[tuple]) -> list[tuple] | None:
    """(case number, arguments, the student's output) for every case; None if the exercise is not attempted."""
    if not cases:
        raise ValueError("cases is empty: give at least one tuple of arguments to check")
    outputs = []
    for i, args in enumerate(cases):
        try:
            outputs.append((i, args, _call(student, args)))
        except _NotAttempted:
            return None
    return outputs


def check_exercise(student: Callable, reference: Callable, cases: Sequence[tuple], atol: float = 1e-6,
                   rtol: float = 1e-5) -> str:
    """Compare a student's function with ttq_lib's on each tuple of arguments in ``cases``.

    Outputs may be numbers, tensors or tuples of them; they match when of the same shape and equal within
    ``atol + rtol * |want|``.  Returns "not attempted yet" (see the module docstring), raises
    :class:`ExerciseMismatch` naming the first case that differs, else returns a success message.  The checks
    hold under ``python -O`` too.
    """
    outputs = _outputs(student, cases)
    if outputs is None:
        return _not_attempted()
    for i, args, got in outputs:
        got_t, want_t = _as_tuple(got), _as_tuple(reference(*args))
        if len(got_t) != len(want_t):
            raise ExerciseMismatch(f"case {i}: expected {len(want_t)} output(s), got {len(got_t)}")
        for j, (a, b) in enumerate(zip(got_t, want_t)):
            a = torch.as_tensor(a, dtype=torch.float64)
            b = torch.as_tensor(b, dtype=torch.float64)
            if a.shape != b.shape:
                raise ExerciseMismatch(f"case {i}, output {j}: shape {tuple(a.shape)} != expected {tuple(b.shape)}")
            if not torch.allclose(a, b, atol=atol, rtol=rtol):
                raise ExerciseMismatch(
                    f"case {i}, output {j}: max difference {float((a - b).abs().max()):.3g} from ttq_lib's answer")
    return f"correct: all {len(cases)} cases match ttq_lib"


def check_property(student: Callable, accept: Callable[..., str | None], cases: Sequence[tuple],
                   what: str = "the property the exercise asks for") -> str:
    """Check a property of the student's output instead of one exact value.

    ``accept(got, *args)`` returns ``None`` when the output ``got`` for the arguments ``args`` is right,
    else a sentence saying what is wrong.  Use it when the task has several right answers (any threshold
    between two neighbouring ``|w|`` values zeroes the same weights), so that the check asks exactly what
    the exercise states and no unstated convention of ttq_lib's.
    """
    outputs = _outputs(student, cases)
    if outputs is None:
        return _not_attempted()
    for i, args, got in outputs:
        problem = accept(got, *args)
        if problem:
            raise ExerciseMismatch(f"case {i}: {problem}")
    return f"correct: all {len(cases)} cases have {what}"
