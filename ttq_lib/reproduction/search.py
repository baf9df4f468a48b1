"""The learning-rate search report: each searched recipe's accuracy on held-out training images, the best marked.

The reproduction chooses each method's learning rate (and TTQ's ``scale_lr`` for Wp, Wn) by one and the same
small search, run on images held out of the training split (``--holdout N``: never trained on, the same N images
for every run), so that the test split plays no part in any choice (reproduce/cifar10-lr-search.toml).  This
module reads such a plan's results folder (:mod:`.plan_results`) and reports, per model and method, every
recipe with its settings and held-out accuracy, the best one, and how far each other recipe is from it.

How sure is "best"?  With several seeds per recipe the gap to the best gets Welch's t interval over seeds
(:mod:`.stats`).  With one seed, the only noise we can state is that of measuring on N images: a run's accuracy
p has the binomial standard error ``sqrt(p (1 - p) / N)`` (0.42 points at p = 0.9, N = 5000), and the gap gets
the normal interval ``gap +- 1.96 sqrt(se_1^2 + se_2^2)``.  That treats the two runs' errors as independent;
two models scored on the same images make correlated mistakes, so the interval is wider than a paired one
would be (conservative), and it leaves out seed-to-seed training noise, which only more seeds can measure.
A gap whose interval holds 0 is reported as not resolved: the choice between those recipes is then a coin
toss this search cannot settle, and the report says so.

Which recipes are rivals: those of one model and method with the same number of epochs, so that a search
compares settings at one budget.  The FP adaptation (2 epochs, the model every searched run starts from) is
thus no rival of a searched FP recipe (4 epochs from it): it is reported as "not searched".

Held-out is not unseen when the runs start from a pretrained model that was trained on the whole training
split (the CIFAR ResNets were): the held-out accuracy then partly measures memory, which smaller steps keep
better, so such a search leans towards small learning rates.  README says so beside the report.
"""
from __future__ import annotations

import math
import os

from .plan_results import METHODS, NAMES, SEARCHED, check_one_split, depth, read_runs
from .stats import mean, sample_std, welch_interval
from .table import format_grid

__all__ = ["search_rows", "best_settings", "render_search"]

Z95 = 1.959964  # the normal distribution's 97.5 % quantile


def _groups(finished: list[dict]) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for r in finished:
        key = (r["model"], r["method"], r["recipe"])
        g = groups.setdefault(key, {"model": r["model"], "method": r["method"], "recipe": r["recipe"],
                                    "settings": r["settings"], "epochs": r["epochs"], "runs": []})
        g["runs"].append(r)
    out = []
    for g in groups.values():
        accs = [100.0 - r["error"] for r in g["runs"]]
        images = [r["eval_images"] for r in g["runs"] if r["eval_images"]]
        g.update(n=len(accs), accuracies=accs, mean=mean(accs), std=sample_std(accs) if len(accs) > 1 else None,
                 images=min(images) if images else None)
        out.append(g)
    return sorted(out, key=lambda g: (depth(g["model"]), METHODS.index(g["method"]), g["recipe"]))


def _binomial_se(acc: float, images: int | None) -> float | None:
    if not images:
        return None
    p = acc / 100.0
    return 100.0 * math.sqrt(p * (1.0 - p) / images)


def _gap(group: dict, best: dict) -> dict:
    """group - best in held-out accuracy points, with an interval over seeds or from the binomial noise."""
    diff = group["mean"] - best["mean"]
    if group["n"] >= 2 and best["n"] >= 2:
        try:
            w = welch_interval(group["accuracies"], best["accuracies"], 0.95)
            return {"diff": diff, "low": w.low, "high": w.high, "how": "Welch over seeds"}
        except ValueError:  # no spread on either side
            pass
    ses = [_binomial_se(g["mean"], g["images"]) for g in (group, best)]
    if None in ses:
        return {"diff": diff, "low": None, "high": None, "how": None}
    # The mean over n seeds of binomial measurements: its se shrinks with sqrt(n).
    half = Z95 * math.sqrt(ses[0] ** 2 / group["n"] + ses[1] ** 2 / best["n"])
    return {"diff": diff, "low": diff - half, "high": diff + half, "how": "binomial"}


def search_rows(plan_dir: str | os.PathLike) -> list[dict]:
    """One dict per (model, method, recipe): ``model``, ``method``, ``recipe``, ``settings`` (lr, scale_lr, ...),
    ``epochs``, ``n``, ``mean`` / ``std`` / ``accuracies`` (held-out accuracy, %), ``images`` (held-out images),
    ``best`` (True for the best recipe of its model, method and budget), ``gap`` (``diff``, ``low``, ``high``, ``how``:
    this recipe minus the best, None for the best itself), ``resolved`` (the gap's interval excludes 0) and
    ``unfinished`` (started runs of the same model, method and budget, not yet finished).
    """
    finished, unfinished = read_runs(plan_dir)
    if not finished:
        raise ValueError(f"{plan_dir}: no finished run yet ({len(unfinished)} unfinished); run the plan first")
    check_one_split(finished, "holdout", plan_dir)
    groups = _groups(finished)
    for g in groups:
        rivals = [h for h in groups if _rivals(h, g)]
        best = max(rivals, key=lambda h: h["mean"])
        g["best"] = g is best
        g["alone"] = len(rivals) == 1  # nothing was searched here (the FP adaptation)
        g["gap"] = None if g is best else _gap(g, best)
        g["resolved"] = None if g is best or g["gap"]["low"] is None else not (g["gap"]["low"] <= 0 <= g["gap"]["high"])
        g["unfinished"] = sum(_rivals(u, g) for u in unfinished)  # a running FP search is not the adaptation's
    return groups


def _rivals(a: dict, b: dict) -> bool:
    """Whether two recipes compete in the search: one model, one method, one budget (see the module's text)."""
    return (a["model"], a["method"], a["epochs"]) == (b["model"], b["method"], b["epochs"])


def best_settings(plan_dir: str | os.PathLike) -> dict[tuple[str, str], dict]:
    """(model, method) -> the best searched recipe's settings, e.g. {("resnet20", "ttq"): {"lr": 0.1, ...}}.
    A recipe that had no rival (the FP adaptation) was not searched and is left out."""
    out: dict[tuple[str, str], dict] = {}
    for g in search_rows(plan_dir):
        if g["best"] and not g["alone"]:
            key = (g["model"], g["method"])
            if key in out:
                raise ValueError(f"{plan_dir}: {NAMES[g['method']]} {g['model']} was searched at more than one "
                                 "budget (epochs); best_settings cannot say which one the plan uses")
            out[key] = {k: v for k, v in g["settings"].items() if v is not None}
    return out


def _setting(value) -> str:
    return "-" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def _acc_cell(g: dict, pm: str) -> str:
    if g["n"] == 1:
        return f"{g['mean']:.2f} (n=1)"
    return f"{g['mean']:.2f} {pm} {g['std']:.2f} (n={g['n']})"


def _gap_cell(g: dict) -> str:
    if g["best"]:
        return "only recipe" if g["alone"] else "best"
    gap = g["gap"]
    if gap["low"] is None:
        return f"{gap['diff']:+.2f}"
    return f"{gap['diff']:+.2f} [{gap['low']:+.2f}, {gap['high']:+.2f}]" + ("" if g["resolved"] else " n.r.")


def render_search(plan_dir: str | os.PathLike, markdown: bool = False) -> str:
    """The search report as a markdown or plain-text table, its legend, and the chosen settings per method."""
    rows = search_rows(plan_dir)
    pm = "±" if markdown else "+-"
    # lr always (it is what the search chooses), other settings where they vary between searched runs
    shown = ["lr"] + [k for k in SEARCHED[1:] if any(g["settings"].get(k) is not None for g in rows)
                      and len({g["settings"].get(k) for g in rows if not g["alone"]}) > 1]
    header = ["model", "method", "recipe", *shown, "epochs", "held-out accuracy (%)", "minus best [95 % CI]"]
    body = [[f"ResNet-{depth(g['model'])[0]}" if g["model"].startswith("resnet") else g["model"],
             NAMES[g["method"]], g["recipe"], *(_setting(g["settings"].get(k)) for k in shown),
             _setting(g["epochs"]), _acc_cell(g, pm), _gap_cell(g)] for g in rows]
    images = sorted({g["images"] for g in rows if g["images"]})
    lines = format_grid(header, body, markdown)
    lines += ["", (f"Held-out accuracy: on {', '.join(map(str, images)) or 'the'} training images held out of "
                   f"training (the same images for every run; the test split is not used). Mean {pm} sample std "
                   "over seeds. 'minus best': this recipe's accuracy minus the best one's of the same model and "
                   "method, in points, with a 95 % interval (Welch over seeds when both have 2 or more; else "
                   "from the binomial noise of the held-out images, treating the runs as independent: "
                   "conservative, and blind to seed-to-seed noise); n.r. = not resolved, the interval holds 0."),
              ""]
    for g in rows:
        if not g["best"]:
            continue
        ties = [h["recipe"] for h in rows if _rivals(h, g) and h["resolved"] is False]
        settings = ", ".join(f"{k} {_setting(v)}" for k, v in g["settings"].items() if k in shown and v is not None)
        tie = (f"; not resolved from {', '.join(ties)} (within the noise of this search)" if ties
               else "" if g["alone"] else "; every other recipe is resolved below it")
        unfinished = (f" ({g['unfinished']} started run(s) of this model, method and budget unfinished)"
                      if g["unfinished"] else "")
        prefix = "- " if markdown else ""
        what = f"{g['recipe']} ({settings}), not searched" if g["alone"] else f"best {g['recipe']} ({settings})"
        lines.append(f"{prefix}{NAMES[g['method']]} {g['model']}: {what}{tie}{unfinished}.")
    return "\n".join(lines) + "\n"
