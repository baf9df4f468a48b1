"""The reproduction table: per depth, the paper's CIFAR-10 test errors beside ours, over seeds, with intervals.

Runs are read by :mod:`.plan_results` (which files make a finished run).  This table compares test errors
only: a plan whose runs were evaluated on held-out training images (``--holdout``, a learning-rate search) is
refused here and reported by :mod:`.search`; a plan mixing the two splits is refused by both.  Unfinished runs
are counted ("2 unfinished") and never averaged.

Grouping (so that different recipes are never averaged together): runs are grouped by (model, method, recipe);
a recipe whose runs ran different numbers of epochs is split further ("ttq (12 epochs)").  When a depth has
more than one recipe for a method (a plan sweeping ``lr = [0.05, 0.1]`` gives ``ttq-lr0.05`` and
``ttq-lr0.1``), the depth gets one row per combination of recipes, labelled by the recipes that vary, so every
row compares exactly one group per method.  Two runs of one group with the same seed are an error: a seed
counts once.

Numbers are test errors in percent (100 - accuracy).  Each cell is mean +- sample std over seeds (n = finished
runs); each run's own test-set noise (about 0.3 points) is part of that spread.  The difference columns are
TTQ - FP and TTQ - TWN in percentage points of error (negative: TTQ better) with Welch's t interval
(:mod:`.stats`); with one run on a side there is no interval.  :func:`table_rows` gives the rows as dicts
(for notebooks); :func:`render_markdown` and :func:`render_text` draw them.
"""
from __future__ import annotations

import itertools
import os
from pathlib import Path

from .paired import RunAnswers, compare_paired, seed_cell
from .paper import PAPER_CIFAR10_ERROR, paper_error
from .plan_results import METHODS, NAMES, check_one_data, check_one_split, depth, planned_recipe, read_runs
from .stats import mean, sample_std, welch_interval

__all__ = ["table_rows", "render_markdown", "render_text", "render_table", "format_grid"]

COMPARISONS = (("ttq", "fp"), ("ttq", "twn"))  # (first, second): the column shows first - second


def _group(runs: list[dict], going: list[dict]) -> dict:
    errors = [r["error"] for r in runs]
    # one number: plan_results splits a recipe whose runs trained different numbers of epochs
    epochs = next((r["epochs"] for r in runs + going if r.get("epochs") is not None), None)
    return {"recipe": runs[0]["recipe"] if runs else None, "n": len(runs), "unfinished": len(going),
            "mean": mean(errors) if errors else None, "std": sample_std(errors) if len(errors) > 1 else None,
            "errors": errors, "seeds": [r["seed"] for r in runs], "runs": [r["run"] for r in runs],
            "epochs": epochs}


def _compare(first: dict, second: dict, a: str, b: str, paper: float | None, confidence: float) -> dict:
    """The difference first - second of mean errors, its interval if there is one, and a verdict in words."""
    out = {"diff": None, "low": None, "high": None, "df": None, "paper": paper, "cell": None, "verdict": None}
    if first["n"] == 0 or second["n"] == 0:
        absent = " and ".join(NAMES[m] for m, g in ((a, first), (b, second)) if g["n"] == 0)
        out.update(cell="n/a (not run)", verdict=f"no finished {absent} runs")
        return out
    out["diff"] = first["mean"] - second["mean"]
    if first["n"] < 2 or second["n"] < 2:
        out.update(cell="n/a (n=1)", verdict=f"not enough seeds (n = {first['n']} {NAMES[a]}, {second['n']} "
                                             f"{NAMES[b]}; an interval needs 2 finished runs on each side)")
        return out
    try:
        w = welch_interval(first["errors"], second["errors"], confidence)
    except ValueError:  # zero spread on both sides (see welch_interval)
        out.update(cell="n/a (no spread)", verdict="no interval: every run on both sides has the same error")
        return out
    out.update(low=w.low, high=w.high, df=w.df, cell=f"{w.diff:+.2f} [{w.low:+.2f}, {w.high:+.2f}]")
    if w.high < 0:
        verdict, why = f"{NAMES[a]} better than {NAMES[b]}", "interval excludes 0"
    elif w.low > 0:
        verdict, why = f"{NAMES[a]} worse than {NAMES[b]}", "interval excludes 0"
    else:
        verdict, why = "no difference shown", "interval includes 0"
    if paper is not None:
        why += f"; the paper's {paper:+.2f} lies {'inside' if w.low <= paper <= w.high else 'outside'} it"
    out["verdict"] = f"{verdict} ({why})"
    return out


def table_rows(plan_dir: str | os.PathLike, confidence: float = 0.95, answers: RunAnswers | None = None) -> list[dict]:
    """One dict per row, ordered by depth; the paper's four depths are always there ("not run" if absent).

    A row: ``model``, ``label`` ("ResNet-20", plus the varying recipes when a depth has several rows),
    ``recipes`` (method -> recipe), ``paper`` (method -> error, and ``"ttq-fp"``), one group per method
    (``n``, ``mean``, ``std``, ``errors``, ``seeds``, ``runs``, ``unfinished``, ``recipe``, ``epochs``), one
    comparison per ``"ttq-fp"`` / ``"ttq-twn"`` (``diff``, ``low``, ``high``, ``df``, ``paper``, ``cell``,
    ``verdict``, and ``paired``: McNemar per seed and pooled, :func:`.paired.compare_paired`), and ``verdict``,
    the comparisons in one line.  ``answers`` gives each run's answers per test image (default: cached beside
    each checkpoint, else computed on the CIFAR-10 the input resolver finds).
    """
    answers = answers or RunAnswers()
    finished, unfinished = read_runs(plan_dir)
    check_one_split(finished, "test", plan_dir)
    data = check_one_data(finished, plan_dir)
    rows = []
    for model in sorted(set(PAPER_CIFAR10_ERROR) | {r["model"] for r in finished + unfinished}, key=depth):
        mine = [r for r in finished if r["model"] == model]
        going = [u for u in unfinished if u["model"] == model]
        recipes = {m: {r["recipe"] for r in mine if r["method"] == m} for m in METHODS}
        for u in going:  # a recipe with no finished run yet gets its own row ("3 unfinished")
            if not any(planned_recipe(r) == u["recipe"] for r in recipes[u["method"]]):
                recipes[u["method"]].add(u["recipe"])
        recipes = {m: sorted(names) or [None] for m, names in recipes.items()}
        combos = list(itertools.product(*recipes.values()))
        for combo in combos:
            chosen = dict(zip(METHODS, combo))
            label = f"ResNet-{depth(model)[0]}" if model.startswith("resnet") else model
            varying = [chosen[m] for m in METHODS if len(recipes[m]) > 1]
            row = {"model": model, "label": label + (f" ({', '.join(varying)})" if varying else ""),
                   "recipes": chosen, "data": data}
            for m in METHODS:
                runs = [r for r in mine if r["method"] == m and r["recipe"] == chosen[m]]
                mine_going = [u for u in going if u["method"] == m and u["recipe"] == planned_recipe(chosen[m])]
                row[m] = _group(runs, mine_going)
            fp, ttq = paper_error(model, "fp"), paper_error(model, "ttq")
            paper_diff = None if fp is None or ttq is None else round(ttq - fp, 2)
            row["paper"] = {"fp": fp, "ttq": ttq, "ttq-fp": paper_diff}
            for a, b in COMPARISONS:
                row[f"{a}-{b}"] = _compare(row[a], row[b], a, b, paper_diff if b == "fp" else None, confidence)
                row[f"{a}-{b}"]["paired"] = compare_paired(Path(plan_dir), row[a], row[b], a, b, answers)
            if not any(row[m]["n"] or row[m]["unfinished"] for m in METHODS):
                row["verdict"] = "not run"
            else:
                row["verdict"] = ". ".join(f"{NAMES[a]} vs {NAMES[b]}: {row[f'{a}-{b}']['verdict']}"
                                           for a, b in COMPARISONS)
            rows.append(row)
    return rows


def _cell(group: dict, pm: str) -> str:
    if group["n"] == 0:
        return f"{group['unfinished']} unfinished" if group["unfinished"] else "not run"
    text = (f"{group['mean']:.2f} (n=1)" if group["n"] == 1
            else f"{group['mean']:.2f} {pm} {group['std']:.2f} (n={group['n']})")
    return text + (f", {group['unfinished']} unfinished" if group["unfinished"] else "")


def _paper_cell(value: float | None, signed: bool = False) -> str:
    return "-" if value is None else (f"{value:+.2f}" if signed else f"{value:.2f}")


def _grid(rows: list[dict], pm: str, confidence: float) -> tuple[list[str], list[list[str]]]:
    ci = f"{confidence * 100:g} % CI"
    header = ["model", "FP paper", "FP ours", "TTQ paper", "TTQ ours", "TWN ours", "TTQ - FP paper",
              f"TTQ - FP ours [{ci}]", f"TTQ - TWN ours [{ci}]"]
    body = [[r["label"], _paper_cell(r["paper"]["fp"]), _cell(r["fp"], pm), _paper_cell(r["paper"]["ttq"]),
             _cell(r["ttq"], pm), _cell(r["twn"], pm), _paper_cell(r["paper"]["ttq-fp"], signed=True),
             r["ttq-fp"]["cell"], r["ttq-twn"]["cell"]] for r in rows]
    return header, body


def _notes(rows: list[dict], pm: str, confidence: float) -> list[str]:
    # a recipe's epochs tell the reader which FP recipe trained as long as the ternary ones (the fair reference)
    epochs = {(m, r["recipes"][m]): r[m]["epochs"] for r in rows for m in METHODS if r["recipes"][m]}
    used = {m: sorted(name for method, name in epochs if method == m) for m in METHODS}
    recipes = "; ".join(f"{NAMES[m]} " + ", ".join(name + ("" if epochs[m, name] is None or name.endswith("epochs)")
                                                          else f" ({epochs[m, name]})") for name in used[m])
                        for m in METHODS if used[m])
    data = next((r["data"] for r in rows if r.get("data")), None)
    return [(f"CIFAR-10 test error (%){f'; our runs on {data}' if data else ''}. Ours: mean {pm} sample std over seeds (n = finished runs; each run's "
             "test-set noise is part of the spread); unfinished runs are counted, not averaged. The paper gives "
             "one number per model (no seeds, no TWN on CIFAR-10)."),
            (f"Differences: TTQ error minus FP (or TWN) error in percentage points, negative = TTQ better; "
             f"[ ] = {confidence * 100:g} % Welch t interval for the difference of mean errors; n/a (n=1): "
             "one run on a side gives no interval."),
            *([f"Recipes (epochs each trains from its start): {recipes}."] if recipes else [])]


def _verdicts(rows: list[dict]) -> list[str]:
    return [f"{r['label']}: {r['verdict']}." for r in rows]


def _paired_grid(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per row and seed, the discordant counts and McNemar's p of each comparison, then all seeds pooled."""
    header = ["model", "seed", "TTQ vs FP: only TTQ / only FP right", "TTQ vs TWN: only TTQ / only TWN right"]
    body = []
    for r in rows:
        results = [r[f"{a}-{b}"]["paired"] for a, b in COMPARISONS]
        seeds = sorted({s["seed"] for res in results for s in res["seeds"]})
        if not seeds:
            continue
        body += [[r["label"], f"s{seed}", *(seed_cell(res, seed) for res in results)] for seed in seeds]
        if len(seeds) > 1:
            body.append([r["label"], "pooled", *(res["cell"] for res in results)])
    return header, body


def _paired_lines(rows: list[dict], markdown: bool) -> list[str]:
    header, body = _paired_grid(rows)
    if not body:
        missing = next((r[f"{a}-{b}"]["paired"]["verdict"] for r in rows for a, b in COMPARISONS
                        if r[f"{a}-{b}"]["paired"]["cell"].startswith("n/a (no predictions")), None)
        return ["", f"Paired tests: none ({missing})" if missing else "Paired tests: no seed ran two methods."]
    note = ("Paired on the same test images: for runs of one depth and seed (one start), the images only the "
            "first method gets right / only the second, and McNemar's exact p; 'pooled' sums the seeds' counts "
            "(Mantel-Haenszel for matched pairs).")
    verdicts = [f"{r['label']}: " + ". ".join(f"{NAMES[a]} vs {NAMES[b]}, paired: {r[f'{a}-{b}']['paired']['verdict']}"
                                               for a, b in COMPARISONS if r[f"{a}-{b}"]["paired"]["seeds"]) + "."
                for r in rows if any(r[f"{a}-{b}"]["paired"]["seeds"] for a, b in COMPARISONS)]
    bullet = "- " if markdown else ""
    return ["", *format_grid(header, body, markdown), "", note, "", *(bullet + v for v in verdicts)]


def format_grid(header: list[str], body: list[list[str]], markdown: bool) -> list[str]:
    """A table as markdown lines, or as aligned plain-text lines (ASCII only) for the terminal."""
    if markdown:
        return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
                + ["| " + " | ".join(row) + " |" for row in body])
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()

    return [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(line) for line in body]


def render_markdown(rows: list[dict], confidence: float = 0.95) -> str:
    """A markdown table (README, notebook 03), its legend, and one verdict line per row."""
    lines = format_grid(*_grid(rows, "±", confidence), markdown=True)
    lines += ["", " ".join(_notes(rows, "±", confidence)), ""] + [f"- {v}" for v in _verdicts(rows)]
    return "\n".join(lines + _paired_lines(rows, markdown=True)) + "\n"


def render_text(rows: list[dict], confidence: float = 0.95) -> str:
    """The same table as aligned plain text (ASCII only), for the terminal."""
    lines = format_grid(*_grid(rows, "+-", confidence), markdown=False)
    lines += [""] + _notes(rows, "+-", confidence) + [""] + _verdicts(rows)
    return "\n".join(lines + _paired_lines(rows, markdown=False)) + "\n"


def render_table(plan_dir: str | os.PathLike, markdown: bool = False, confidence: float = 0.95) -> str:
    """:func:`table_rows` of ``plan_dir`` drawn as markdown or plain text."""
    return (render_markdown if markdown else render_text)(table_rows(plan_dir, confidence), confidence)
