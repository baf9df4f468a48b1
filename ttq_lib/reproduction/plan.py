"""A reproduction plan: every run named by depth, recipe and seed, read from a TOML file.

A plan file (``reproduce/cifar10.toml`` is the project's) holds::

    name = "cifar10"                      # runs go to results/<name>/<run>
    # data = "cifar10-jpeg.tar.gz"        # optional: the input resolver finds CIFAR-10 when it is left out
    # pretrained = "models/{model}-*.th"  # optional: where start_from = "pretrained" looks; left out, the
                                          # published pretrained ResNets, found or downloaded by the resolver

    [recipes.adapt]                       # any TrainConfig field, plus start_from
    method = "fp"
    start_from = "pretrained"
    epochs = 2
    lr = 0.01

    [recipes.ttq]
    method = "ttq"
    start_from = "adapt"                  # the adapt run of the same model and seed; or a file, where
                                          # "{model}" and "{seed}" are the run's (another plan's runs)
    lr = [0.05, 0.1]                      # a list makes one recipe per value: ttq-lr0.05, ttq-lr0.1

    [[runs]]
    models = ["resnet20", "resnet56"]
    seeds = [0, 1, 2]
    recipes = ["adapt", "ttq"]

A run is called ``<model>-<recipe>-s<seed>``.  Relative paths in the file are relative to the file's folder,
so a plan works from any working directory.
"""
from __future__ import annotations

import dataclasses
import glob
import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ..data.inputs import resolve_pretrained
from ..training.config import TrainConfig
from ..training.settings import names

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

PLAN_KEYS = {"name", "data", "pretrained", "recipes", "runs", "description"}
RUN_KEYS = {"models", "seeds", "recipes"}
# Set by the runner for every run (declared so in TrainConfig), so a recipe may not set them.
RESERVED = set(names(TrainConfig, runner_sets=True))


class PlanError(ValueError):
    """A plan file that cannot be used as written: unknown keys, missing recipes, bad values."""


@dataclass
class PlannedRun:
    """One training run of a plan: its name, its settings and the run it starts from (if any)."""
    name: str
    model: str
    recipe: str
    seed: int
    settings: dict                 # TrainConfig fields from the recipe
    start_from: str | None         # "pretrained", a run name of this plan, a file path, or None (scratch)
    after: str | None = None       # the run that must finish first (start_from when it names a run)

    def config(self, out: Path, data: str | None, start_file: str | None) -> TrainConfig:
        return TrainConfig(**self.settings, model=self.model, seed=self.seed, out=str(out), data=data,
                           start_from=start_file, recipe=self.recipe)


@dataclass
class Plan:
    name: str
    path: Path
    data: str | None
    pretrained: str | None
    runs: list[PlannedRun] = field(default_factory=list)

    def run(self, name: str) -> PlannedRun:
        for r in self.runs:
            if r.name == name:
                return r
        raise KeyError(name)

    def pretrained_file(self, model: str) -> str:
        """The pretrained checkpoint of ``model``: the plan's ``pretrained`` pattern with ``{model}`` filled in,
        or, without one, the published file found or downloaded by :func:`ttq_lib.data.inputs.resolve_pretrained`."""
        if not self.pretrained:
            return resolve_pretrained(model).value
        pattern = self.pretrained.format(model=model)
        found = sorted(glob.glob(pattern))
        if not found:
            raise FileNotFoundError(f"no pretrained {model} matches {pattern!r} (the plan's 'pretrained'); "
                                    "point it at the folder of the full-precision CIFAR ResNets")
        return found[0]


def _resolve(value: str | None, base: Path) -> str | None:
    """A path relative to the plan file's folder; other strings (synthetic:N, download) stay as they are."""
    if value is None or value in ("download",) or value.startswith("synthetic"):
        return value
    path = Path(value).expanduser()
    return str(path if path.is_absolute() else os.path.normpath(base / path))


def _variants(name: str, recipe: dict) -> list[tuple[str, dict]]:
    """A recipe whose values include lists becomes one recipe per combination: ``ttq-lr0.05`` ..."""
    listed = {k: v for k, v in recipe.items() if isinstance(v, list) and k != "milestones"}
    if not listed:
        return [(name, recipe)]
    out = []
    for values in itertools.product(*listed.values()):
        chosen = dict(zip(listed, values))
        label = "-".join(f"{k.replace('_', '')}{v}" for k, v in chosen.items())
        out.append((f"{name}-{label}", {**recipe, **chosen}))
    return out


def load_plan(path: str | os.PathLike, data: str | None = None) -> Plan:
    """Read and check a plan file; ``data`` overrides the plan's data source."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"plan {path} does not exist; the project's plan is reproduce/cifar10.toml")
    try:
        raw = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"{path} is not valid TOML: {e}") from None
    unknown = set(raw) - PLAN_KEYS
    if unknown:
        raise PlanError(f"{path}: unknown key(s) {sorted(unknown)}; a plan holds {sorted(PLAN_KEYS)}")
    if "name" not in raw or "runs" not in raw or "recipes" not in raw:
        raise PlanError(f"{path} needs name = \"...\", [recipes.<name>] tables and [[runs]] entries")
    base = path.resolve().parent
    plan = Plan(name=raw["name"], path=path, data=_resolve(data or raw.get("data"), Path.cwd() if data else base),
                pretrained=_resolve(raw.get("pretrained"), base))
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    recipes: dict[str, tuple[dict, str | None]] = {}
    variants: dict[str, list[str]] = {}
    for rname, recipe in raw["recipes"].items():
        bad = sorted(set(recipe) - (fields - RESERVED) - {"start_from"})
        if bad:
            raise PlanError(f"{path}: recipe {rname!r} has key(s) {bad} that are no training options (or are set "
                            f"by the runner: {sorted(RESERVED - {'start_from'})}); see `ttq train --help`")
        for vname, values in _variants(rname, dict(recipe)):
            start = values.pop("start_from", None)
            recipes[vname] = (values, start)
            variants.setdefault(rname, []).append(vname)
    seen = set()
    for i, entry in enumerate(raw["runs"]):
        bad = sorted(set(entry) - RUN_KEYS)
        if bad or not RUN_KEYS <= set(entry):
            raise PlanError(f"{path}: [[runs]] entry {i + 1} must hold exactly {sorted(RUN_KEYS)}, has {sorted(entry)}")
        for model, rname, seed in itertools.product(entry["models"], entry["recipes"], entry["seeds"]):
            names = variants.get(rname) or ([rname] if rname in recipes else [])
            if not names:
                raise PlanError(f"{path}: [[runs]] names recipe {rname!r}, which is not defined; defined: "
                                f"{sorted(raw['recipes'])}")
            for vname in names:
                settings, start = recipes[vname]
                run = PlannedRun(name=f"{model}-{vname}-s{seed}", model=model, recipe=vname, seed=int(seed),
                                 settings=settings, start_from=start)
                if start is not None and start != "pretrained":
                    if start in recipes:
                        run.after = f"{model}-{start}-s{seed}"
                    else:  # a file; "{model}" and "{seed}" name the run's own (another plan's runs, say)
                        run.start_from = _resolve(start.format(model=model, seed=seed), base)
                if run.name not in seen:
                    seen.add(run.name)
                    plan.runs.append(run)
    names = {r.name for r in plan.runs}
    for r in plan.runs:
        if r.after and r.after not in names:
            raise PlanError(f"{path}: {r.name} starts from {r.after}, which the plan does not run; add its recipe "
                            "to the same [[runs]] entry")
        r.config(Path("."), plan.data, None).validate()  # every option checked before anything runs
    return plan
