"""Paired tests for the reproduction table: two methods' runs of one depth and seed share their start and are
scored on the same 10,000 test images, so they can be compared image by image, which is far more sensitive than
comparing two accuracies: only the images one gets right and the other wrong (the discordant pairs) carry the
difference.  Per seed, McNemar's exact test; over seeds, the same test on the summed discordant counts (for
one-to-one matched pairs in strata this is the Mantel-Haenszel test), with the seeds' own verdicts beside it.
"""
from __future__ import annotations

import json
from pathlib import Path

from .plan_results import NAMES
from .predictions import PredictionsUnavailable, Predictor
from .stats import mcnemar_exact

#: Below this pooled p-value a difference is called beyond test noise.
ALPHA = 0.05


def compare_paired(plan_dir: Path, first: dict, second: dict, a: str, b: str, predictor: Predictor) -> dict:
    """McNemar per seed that both groups ran, and pooled: ``{"seeds": [{"seed", "only_a", "only_b", "p"}],
    "only_a", "only_b", "p", "cell", "verdict"}``; ``{"cell": "n/a", "verdict": why}`` when nothing pairs."""
    by_seed = {s: (r1, r2) for s, r1 in zip(first["seeds"], first["runs"])
               for s2, r2 in zip(second["seeds"], second["runs"]) if s == s2 and s is not None}
    if not by_seed:
        return {"seeds": [], "cell": "n/a", "verdict": "no seed ran both"}
    seeds = []
    try:
        for seed in sorted(by_seed):
            one, two = (predictor.answers(plan_dir / run) for run in by_seed[seed])
            only_a, only_b = int((one & ~two).sum()), int((two & ~one).sum())
            seeds.append({"seed": seed, "only_a": only_a, "only_b": only_b, "p": mcnemar_exact(only_a, only_b)})
    except PredictionsUnavailable as e:
        return {"seeds": [], "cell": "n/a (no predictions)", "verdict": str(e)}
    only_a, only_b = sum(s["only_a"] for s in seeds), sum(s["only_b"] for s in seeds)
    p = mcnemar_exact(only_a, only_b)
    if p >= ALPHA:
        verdict = f"no difference beyond test noise (p = {p:.2g})"
    else:
        verdict = (f"{NAMES[a]} {'better' if only_a > only_b else 'worse'} than {NAMES[b]} beyond test noise "
                   f"(p = {p:.2g})")
    below = sum(s["p"] < ALPHA for s in seeds)
    if len(seeds) > 1:
        verdict += f"; {below} of {len(seeds)} seeds alone below {ALPHA}"
    return {"seeds": seeds, "only_a": only_a, "only_b": only_b, "p": p,
            "cell": f"{only_a}/{only_b}, p = {p:.2g}", "verdict": verdict}


class RunAnswers(Predictor):
    """A :class:`Predictor` that reads each run's metrics.json and remembers each run's answers."""

    def __init__(self, source=None):
        super().__init__(source)
        self._seen: dict[Path, object] = {}

    def answers(self, folder: Path):
        if folder not in self._seen:
            self._seen[folder] = self.correct(folder, json.loads((folder / "metrics.json").read_text()))
        return self._seen[folder]


def seed_cell(result: dict, seed) -> str:
    """'284/376, p = 0.00039' for one seed of a comparison, '' when that seed did not pair."""
    for s in result.get("seeds", []):
        if s["seed"] == seed:
            return f"{s['only_a']}/{s['only_b']}, p = {s['p']:.2g}"
    return ""
