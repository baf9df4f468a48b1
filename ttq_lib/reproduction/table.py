"""The reproduction table: per depth, the paper's CIFAR-10 test errors beside ours, over seeds, with intervals.

A plan's results folder, ``results/<plan>/``, holds one folder per run.  A run is finished when its folder holds
``metrics.json`` (``model``, ``method``, ``test_accuracy`` and, from the runner, ``seed`` and ``recipe``); a
folder with only ``config.json`` is unfinished: it is counted ("2 unfinished") and never averaged.  Old metrics
without ``seed`` take it from ``config.json``; a ``recipe`` in neither file is taken to be the method.

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
import json
import os
import re
from pathlib import Path

from .paper import PAPER_CIFAR10_ERROR, paper_error
from .stats import mean, sample_std, welch_interval

__all__ = ["METHODS", "read_runs", "table_rows", "render_markdown", "render_text", "render_table"]

METHODS = ("fp", "ttq", "twn")
NAMES = {"fp": "FP", "ttq": "TTQ", "twn": "TWN"}
COMPARISONS = (("ttq", "fp"), ("ttq", "twn"))  # (first, second): the column shows first - second
LAYOUT = ("results/<plan>/ holds one folder per run, each with config.json and, once the run is finished, "
          "metrics.json")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix or remove that run folder") from None


def _depth(model: str) -> tuple[int, str]:
    digits = re.findall(r"\d+", model)
    return (int(digits[-1]) if digits else 10 ** 9, model)


def _run_folders(plan: Path) -> list[Path]:
    if not plan.exists():
        raise FileNotFoundError(f"{plan} does not exist: `ttq table` reads a plan's results folder ({LAYOUT})")
    if not plan.is_dir():
        raise ValueError(f"{plan} is not a folder: pass a plan's results folder ({LAYOUT})")
    folders = [d for d in sorted(plan.iterdir())
               if d.is_dir() and ((d / "metrics.json").is_file() or (d / "config.json").is_file())]
    if not folders:
        # A common slip is passing results/ itself: point at the plan folders inside it.
        plans = [d for d in sorted(plan.iterdir()) if d.is_dir() and any(d.glob("*/config.json"))]
        hint = f"; it holds plan folders, pass one of them: {', '.join(str(p) for p in plans)}" if plans else ""
        raise ValueError(f"{plan} holds no run folders ({LAYOUT}){hint}")
    return folders


def read_runs(plan_dir: str | os.PathLike) -> tuple[list[dict], list[dict]]:
    """(finished, unfinished) runs of a plan's results folder, one dict per run folder.

    A finished run: ``run`` (folder name), ``model``, ``method``, ``recipe``, ``seed`` (None if nowhere
    recorded), ``epochs`` and ``test_error`` (%).  An unfinished run: ``run``, ``model``, ``method``.
    """
    finished, unfinished = [], []
    for folder in _run_folders(Path(plan_dir)):
        metrics, config = _read_json(folder / "metrics.json"), _read_json(folder / "config.json") or {}
        source = metrics if metrics is not None else config
        where = folder / ("metrics.json" if metrics is not None else "config.json")
        missing = [k for k in ("model", "method") + (("test_accuracy",) if metrics is not None else ())
                   if source.get(k) is None]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}: it is not a run written by `ttq train`; "
                             "move it out of the plan folder")
        if source["method"] not in METHODS:
            raise ValueError(f"{where}: method {source['method']!r} has no column in the table "
                             f"({', '.join(METHODS)}); move that run out of the plan folder")
        run = {"run": folder.name, "model": source["model"], "method": source["method"]}
        if metrics is None:
            unfinished.append(run)
            continue
        run.update(recipe=metrics.get("recipe") or config.get("recipe") or metrics["method"],
                   seed=metrics.get("seed", config.get("seed")),
                   epochs=metrics.get("epochs", config.get("epochs")),
                   test_error=100.0 - float(metrics["test_accuracy"]))
        finished.append(run)
    _split_by_epochs(finished)
    _check_seeds(finished)
    return finished, unfinished


def _split_by_epochs(runs: list[dict]) -> None:
    """Rename the recipe of runs that share a recipe name but not their epochs: "ttq" -> "ttq (12 epochs)"."""
    epochs: dict[tuple, set] = {}
    for r in runs:
        epochs.setdefault((r["model"], r["method"], r["recipe"]), set()).add(r["epochs"])
    for r in runs:
        if len(epochs[(r["model"], r["method"], r["recipe"])]) > 1:
            r["recipe"] = f"{r['recipe']} ({r['epochs'] if r['epochs'] is not None else 'unknown'} epochs)"


def _check_seeds(runs: list[dict]) -> None:
    seen: dict[tuple, str] = {}
    for r in runs:
        if r["seed"] is None:
            continue
        key = (r["model"], r["method"], r["recipe"], r["seed"])
        if key in seen:
            raise ValueError(
                f"runs {seen[key]} and {r['run']} are both {r['model']} {r['method']}, recipe {r['recipe']!r}, seed "
                f"{r['seed']}: a seed counts once. If they are different recipes, write \"recipe\" into their "
                "metrics.json; if one repeats the other, move it out of the plan folder")
        seen[key] = r["run"]


def _group(runs: list[dict], unfinished: int) -> dict:
    errors = [r["test_error"] for r in runs]
    return {"recipe": runs[0]["recipe"] if runs else None, "n": len(runs), "unfinished": unfinished,
            "mean": mean(errors) if errors else None, "std": sample_std(errors) if len(errors) > 1 else None,
            "errors": errors, "seeds": [r["seed"] for r in runs], "runs": [r["run"] for r in runs]}


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


def table_rows(plan_dir: str | os.PathLike, confidence: float = 0.95) -> list[dict]:
    """One dict per row, ordered by depth; the paper's four depths are always there ("not run" if absent).

    A row: ``model``, ``label`` ("ResNet-20", plus the varying recipes when a depth has several rows),
    ``recipes`` (method -> recipe), ``paper`` (method -> error, and ``"ttq-fp"``), one group per method
    (``n``, ``mean``, ``std``, ``errors``, ``seeds``, ``runs``, ``unfinished``, ``recipe``), one comparison per
    ``"ttq-fp"`` / ``"ttq-twn"`` (``diff``, ``low``, ``high``, ``df``, ``paper``, ``cell``, ``verdict``), and
    ``verdict``, the comparisons in one line.
    """
    finished, unfinished = read_runs(plan_dir)
    rows = []
    for model in sorted(set(PAPER_CIFAR10_ERROR) | {r["model"] for r in finished + unfinished}, key=_depth):
        mine = [r for r in finished if r["model"] == model]
        recipes = {m: sorted({r["recipe"] for r in mine if r["method"] == m}) or [None] for m in METHODS}
        combos = list(itertools.product(*recipes.values()))
        for combo in combos:
            chosen = dict(zip(METHODS, combo))
            label = f"ResNet-{_depth(model)[0]}" if model.startswith("resnet") else model
            varying = [chosen[m] for m in METHODS if len(recipes[m]) > 1]
            row = {"model": model, "label": label + (f" ({', '.join(varying)})" if varying else ""),
                   "recipes": chosen}
            for m in METHODS:
                runs = [r for r in mine if r["method"] == m and r["recipe"] == chosen[m]]
                row[m] = _group(runs, sum(u["model"] == model and u["method"] == m for u in unfinished))
            fp, ttq = paper_error(model, "fp"), paper_error(model, "ttq")
            paper_diff = None if fp is None or ttq is None else round(ttq - fp, 2)
            row["paper"] = {"fp": fp, "ttq": ttq, "ttq-fp": paper_diff}
            for a, b in COMPARISONS:
                row[f"{a}-{b}"] = _compare(row[a], row[b], a, b, paper_diff if b == "fp" else None, confidence)
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
    used = {m: sorted({r["recipes"][m] for r in rows if r["recipes"][m]}) for m in METHODS}
    recipes = "; ".join(f"{NAMES[m]} {', '.join(used[m])}" for m in METHODS if used[m])
    return [(f"CIFAR-10 test error (%). Ours: mean {pm} sample std over seeds (n = finished runs; each run's "
             "test-set noise is part of the spread); unfinished runs are counted, not averaged. The paper gives "
             "one number per model (no seeds, no TWN on CIFAR-10)."),
            (f"Differences: TTQ error minus FP (or TWN) error in percentage points, negative = TTQ better; "
             f"[ ] = {confidence * 100:g} % Welch t interval for the difference of mean errors; n/a (n=1): "
             "one run on a side gives no interval."),
            *([f"Recipes: {recipes}."] if recipes else [])]


def _verdicts(rows: list[dict]) -> list[str]:
    return [f"{r['label']}: {r['verdict']}." for r in rows]


def render_markdown(rows: list[dict], confidence: float = 0.95) -> str:
    """A markdown table (README, notebook 03), its legend, and one verdict line per row."""
    header, body = _grid(rows, "±", confidence)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    lines += ["", " ".join(_notes(rows, "±", confidence)), ""] + [f"- {v}" for v in _verdicts(rows)]
    return "\n".join(lines) + "\n"


def render_text(rows: list[dict], confidence: float = 0.95) -> str:
    """The same table as aligned plain text (ASCII only), for the terminal."""
    header, body = _grid(rows, "+-", confidence)
    widths = [max(len(line[i]) for line in [header] + body) for i in range(len(header))]

    def fmt(line: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip()

    lines = [fmt(header), "  ".join("-" * w for w in widths)] + [fmt(line) for line in body]
    return "\n".join(lines + [""] + _notes(rows, "+-", confidence) + [""] + _verdicts(rows)) + "\n"


def render_table(plan_dir: str | os.PathLike, markdown: bool = False, confidence: float = 0.95) -> str:
    """:func:`table_rows` of ``plan_dir`` drawn as markdown or plain text."""
    rows = table_rows(plan_dir, confidence)
    return (render_markdown if markdown else render_text)(rows, confidence)
