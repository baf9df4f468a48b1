"""TrainConfig is declared once: `ttq train`'s options, a plan's allowed keys and the runner's execution settings
are made from its fields' declarations; the threshold rule checks itself where it is made; the training loop
reads as config -> inputs -> model -> optimizer -> epochs, naming no data set."""
from __future__ import annotations

import argparse
import ast
import dataclasses
from pathlib import Path

import pytest

from ttq_lib import ternarize_model
from ttq_lib.cli import build_parser
from ttq_lib.models import build_model
from ttq_lib.reproduction.plan import RESERVED, PlanError, load_plan
from ttq_lib.reproduction.runner import _comparable
from ttq_lib.thresholds import DEFAULT_T, Rule
from ttq_lib.training.config import EXECUTION_FIELDS, PATH_FIELDS, TrainConfig
from ttq_lib.training.settings import flag

LOOP = Path(__file__).resolve().parents[1] / "ttq_lib/training/loop.py"


def _train_options() -> dict[str, argparse.Action]:
    parser = build_parser("train")
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    options = {}
    for action in sub.choices["train"]._actions:
        options.setdefault(action.dest, action)  # the first: --start-from, not its deprecated alias --init
    return options


def test_every_declared_field_is_one_ttq_train_option_with_its_help_and_choices():
    options = _train_options()
    for f in dataclasses.fields(TrainConfig):
        cli = f.metadata["cli"]
        if cli is False:
            assert f.name not in options, f.name
            continue
        option = options[f.name]
        assert option.option_strings[0] == flag(f)
        assert f.metadata["help"] in option.help, f.name
        choices = cli.get("choices", f.metadata["choices"])
        assert (list(choices) if choices else None) == option.choices, f.name
    assert options["keep_first"].option_strings == ["--quantize-first"]  # spelled as the user thinks of it


def test_a_new_declared_field_becomes_an_option(monkeypatch):
    """The parser is made from the declarations, not a list beside them: a field added to TrainConfig is an
    option of `ttq train` with nothing else written."""
    from ttq_lib.training import config
    from ttq_lib.training.settings import setting

    @dataclasses.dataclass
    class Wider(TrainConfig):
        label_smoothing: float = setting(0.0, "cross-entropy label smoothing")

    monkeypatch.setattr(config, "TrainConfig", Wider)
    options = _train_options()
    assert options["label_smoothing"].option_strings == ["--label-smoothing"]
    assert options["label_smoothing"].type is float and "label smoothing" in options["label_smoothing"].help


def test_groups_give_the_plans_keys_and_the_runners_execution_settings():
    declared = {f.name: f.metadata for f in dataclasses.fields(TrainConfig)}
    assert set(RESERVED) == {n for n, m in declared.items() if m["runner_sets"]}
    assert set(EXECUTION_FIELDS) == {n for n, m in declared.items() if m["group"] == "execution"}
    assert set(PATH_FIELDS) == {"start_from", "data"}
    # the runner calls a plan changed only when a setting outside the execution group changed
    a, b = TrainConfig(), TrainConfig(log_every=5, compile=True, threads=3)
    assert _comparable(a) == _comparable(b) and _comparable(a) != _comparable(TrainConfig(lr=0.2))


def test_a_recipe_may_not_set_what_the_runner_sets(tmp_path):
    plan = tmp_path / "p.toml"
    plan.write_text('name = "p"\ndata = "synthetic:64"\n[recipes.a]\nmethod = "fp"\nthreads = 2\n'
                    '[[runs]]\nmodels = ["resnet20"]\nseeds = [0]\nrecipes = ["a"]\n')
    with pytest.raises(PlanError, match="threads"):
        load_plan(plan)


def test_the_rule_checks_itself_where_it_is_made():
    assert Rule("ttq").t == DEFAULT_T and Rule("twn").t is None and Rule("ttq", sparsity=0.3).t is None
    for bad, message in (({"method": "twn", "t": 0.1}, "does not apply to TWN"), ({"t": 1.5}, r"outside \(0, 1\)"),
                         ({"sparsity": 1.0}, r"outside \[0, 1\)"), ({"t": 0.1, "sparsity": 0.2}, "not both"),
                         ({"method": "fp"}, "not one of")):
        with pytest.raises(ValueError, match=message):
            Rule(**bad)
    with pytest.raises(dataclasses.FrozenInstanceError):
        Rule("ttq").t = 0.2
    # a config's t is its rule's: the factor in use, recorded in config.json
    assert TrainConfig(method="ttq").t == DEFAULT_T and TrainConfig(method="twn").t is None
    with pytest.raises(ValueError, match="does not apply to TWN"):
        TrainConfig(method="twn", t=0.1)
    model = ternarize_model(build_model("resnet20"), rule=Rule("ttq", 0.07))
    assert {m.t for m in model.modules() if hasattr(m, "wp")} == {0.07}


def test_the_loop_reads_as_a_straight_line_and_names_no_data_set():
    tree = ast.parse(LOOP.read_text())
    train = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "train")
    assert train.end_lineno - train.lineno + 1 <= 60
    text = LOOP.read_text().lower()
    assert "cifar" not in text and "imagenet" not in text
    # no environment variable is read in the loop: a supervisor's hooks are passed in
    assert "environ" not in ast.get_source_segment(LOOP.read_text(), train)
