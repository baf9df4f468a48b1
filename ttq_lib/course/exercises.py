"""Exercise checks for the notebooks: a student's function compared with ttq_lib's on given cases."""
from __future__ import annotations

from typing import Callable, Sequence

import torch

__all__ = ["ExerciseMismatch", "check_exercise"]


class ExerciseMismatch(AssertionError):
    """A student's answer differs from ttq_lib's.

    Raised explicitly rather than by ``assert``, which ``python -O`` strips (every answer would then be
    "correct"); an AssertionError subclass so notebooks and ``except AssertionError`` behave as before."""


def check_exercise(student: Callable, reference: Callable, cases: Sequence[tuple], atol: float = 1e-6) -> str:
    """Compare a student's function with ttq_lib's on each tuple of arguments in ``cases``.

    Returns "not attempted yet" while the student's function returns None, raises
    :class:`ExerciseMismatch` (an AssertionError) naming the first case that differs, else returns a success
    message.  Outputs may be numbers, tensors or tuples of them.  The checks hold under ``python -O`` too.
    """
    for i, args in enumerate(cases):
        got = student(*args)
        if got is None:
            return "not attempted yet: fill in the function above and run this cell again"
        want = reference(*args)
        got_t = got if isinstance(got, (tuple, list)) else (got,)
        want_t = want if isinstance(want, (tuple, list)) else (want,)
        if len(got_t) != len(want_t):
            raise ExerciseMismatch(f"case {i}: expected {len(want_t)} output(s), got {len(got_t)}")
        for j, (a, b) in enumerate(zip(got_t, want_t)):
            a = torch.as_tensor(a, dtype=torch.float64)
            b = torch.as_tensor(b, dtype=torch.float64)
            if a.shape != b.shape:
                raise ExerciseMismatch(f"case {i}, output {j}: shape {tuple(a.shape)} != expected {tuple(b.shape)}")
            if not torch.allclose(a, b, atol=atol, rtol=1e-5):
                raise ExerciseMismatch(
                    f"case {i}, output {j}: max difference {float((a - b).abs().max()):.3g} from ttq_lib's answer")
    return f"correct: all {len(cases)} cases match ttq_lib"
