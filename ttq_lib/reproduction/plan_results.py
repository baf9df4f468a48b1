"""A plan's results as data: one dict per run folder of ``results/<plan>/``, finished or not.

A run is finished when its folder holds ``metrics.json`` (``model``, ``method``, ``eval_split``,
``<eval_split>_accuracy`` and, from the runner, ``seed`` and ``recipe``); a folder with only ``config.json`` is
unfinished.  Old metrics without ``seed`` take it from ``config.json``; a ``recipe`` in neither file is taken to
be the method; metrics without ``eval_split`` were evaluated on the test split.  Runs of one recipe that ran
different numbers of epochs get their recipe split ("ttq (12 epochs)"), and one seed counts once per recipe.

Read by :mod:`.table` (test errors against the paper's) and :mod:`.search` (a learning-rate search on held-out
training images).
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

__all__ = ["METHODS", "NAMES", "SEARCHED", "read_runs", "check_one_data", "check_one_split", "data_name", "depth",
           "eval_split", "planned_recipe"]

METHODS = ("fp", "ttq", "twn")
NAMES = {"fp": "FP", "ttq": "TTQ", "twn": "TWN"}
#: The config.json values a learning-rate search varies, kept with each run (:mod:`.search` shows them).
SEARCHED = ("lr", "scale_lr", "schedule", "weight_decay", "batch_size")
LAYOUT = ("results/<plan>/ holds one folder per run, each with config.json and, once the run is finished, "
          "metrics.json")


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); fix or remove that run folder") from None


def depth(model: str) -> tuple[int, str]:
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

    A finished run: ``run`` (folder name), ``data`` (:func:`data_name`), ``model``, ``method``, ``recipe``, ``seed`` (None if nowhere
    recorded), ``epochs``, ``split`` (the evaluated split: "test" or "holdout"), ``error`` (% on that split),
    ``eval_images`` (how many images it was measured on, when recorded) and ``settings`` (the run's
    :data:`SEARCHED` values from its config.json).  An unfinished run: ``run``, ``model``, ``method``,
    ``recipe`` (as named in config.json, never split by epochs) and ``epochs`` (planned, from config.json).
    """
    finished, unfinished = [], []
    for folder in _run_folders(Path(plan_dir)):
        metrics, config = _read_json(folder / "metrics.json"), _read_json(folder / "config.json") or {}
        source = metrics if metrics is not None else config
        where = folder / ("metrics.json" if metrics is not None else "config.json")
        split = metrics.get("eval_split", "test") if metrics is not None else None
        missing = [k for k in ("model", "method") + ((f"{split}_accuracy",) if metrics is not None else ())
                   if source.get(k) is None]
        if missing:
            raise ValueError(f"{where} lacks {', '.join(missing)}: it is not a run written by `ttq train`; "
                             "move it out of the plan folder")
        if source["method"] not in METHODS:
            raise ValueError(f"{where}: method {source['method']!r} has no column in the table "
                             f"({', '.join(METHODS)}); move that run out of the plan folder")
        run = {"run": folder.name, "model": source["model"], "method": source["method"]}
        if metrics is None:
            unfinished.append({**run, "recipe": config.get("recipe") or source["method"],
                               "epochs": config.get("epochs")})
            continue
        run.update(data=data_name(metrics), recipe=metrics.get("recipe") or config.get("recipe") or metrics["method"],
                   seed=metrics.get("seed", config.get("seed")),
                   epochs=metrics.get("epochs", config.get("epochs")), split=split,
                   error=100.0 - float(metrics[f"{split}_accuracy"]),
                   eval_images=metrics.get(f"{split}_images"),
                   settings={k: config.get(k) for k in SEARCHED if k in config})
        finished.append(run)
    _split_by_epochs(finished)
    _check_seeds(finished)
    return finished, unfinished


def data_name(metrics: dict) -> str:
    """Which data set a finished run was trained and evaluated on: ``data_name`` in its metrics.json, or, for
    runs written before it was recorded, read from the source they recorded ("tar:.../cifar10-jpeg.tar.gz")."""
    if metrics.get("data_name"):
        return metrics["data_name"]
    source = str(metrics.get("data") or "")
    if "cifar10-jpeg" in source:
        return "CIFAR-10 (JPEG copy)"
    if source.startswith("synthetic"):
        return "synthetic"
    if source.startswith(("download:", "batches:")):
        return "CIFAR-10"
    return f"unknown data ({source or 'not recorded'})"


def check_one_data(finished: list[dict], plan_dir) -> str | None:
    """The one data set every finished run used (None if none finished); runs on different data are refused:
    the JPEG copy costs a model points the original does not, so their errors cannot be averaged or compared."""
    names = sorted({r["data"] for r in finished})
    if len(names) > 1:
        which = "; ".join(f"{n}: {', '.join(r['run'] for r in finished if r['data'] == n)}" for n in names)
        raise ValueError(f"{plan_dir} mixes runs on different data ({which}): their errors are not comparable. "
                         "Keep runs on other data in another results folder (ttq reproduce --results DIR)")
    return names[0] if names else None


def _split_by_epochs(runs: list[dict]) -> None:
    """Rename the recipe of runs that share a recipe name but not their epochs: "ttq" -> "ttq (12 epochs)"."""
    epochs: dict[tuple, set] = {}
    for r in runs:
        epochs.setdefault((r["model"], r["method"], r["recipe"]), set()).add(r["epochs"])
    for r in runs:
        if len(epochs[(r["model"], r["method"], r["recipe"])]) > 1:
            r["recipe"] = f"{r['recipe']} ({r['epochs'] if r['epochs'] is not None else 'unknown'} epochs)"


def planned_recipe(recipe: str | None) -> str | None:
    """The recipe's name as the plan gave it, undoing :func:`_split_by_epochs`: "ttq (12 epochs)" -> "ttq"."""
    return recipe.split(" (")[0] if recipe else recipe


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


def check_one_split(finished: list[dict], split: str, plan_dir) -> None:
    """Refuse runs evaluated on another split than ``split``, naming one of them and what to do."""
    other = [r for r in finished if r["split"] != split]
    if not other:
        return
    if len(other) < len(finished):
        raise ValueError(
            f"{plan_dir} mixes runs evaluated on different splits ({', '.join(sorted({r['split'] for r in finished}))}"
            f"; e.g. {other[0]['run']} on {other[0]['split']}): their errors are not comparable. Keep a "
            "learning-rate search (--holdout) and the test runs in separate plans")
    what = ("a learning-rate search: `ttq table` shows it as a search report" if other[0]["split"] == "holdout"
            else "`ttq table` shows test-split plans as the reproduction table")
    raise ValueError(f"{plan_dir}: its runs were evaluated on the {other[0]['split']} split, not the {split} "
                     f"split; that is {what}")


def eval_split(finished: list[dict]) -> str | None:
    """The one split every finished run was evaluated on ("test", "holdout"), None if none finished."""
    splits = {r["split"] for r in finished}
    return splits.pop() if len(splits) == 1 else (None if not splits else "mixed")
