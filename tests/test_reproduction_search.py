"""The learning-rate search report (ttq_lib.reproduction.search) and the table's refusal of held-out runs, on
small results folders written here the way `ttq train --holdout` writes them."""
import json

import pytest

from ttq_lib.cli import main
from ttq_lib.reproduction.search import best_settings, render_search, search_rows
from ttq_lib.reproduction.stats import welch_interval
from ttq_lib.reproduction.table import table_rows


def write_run(plan, name, method, acc, seed=0, lr=0.1, scale_lr=None, split="holdout", images=5000, epochs=4):
    folder = plan / name
    folder.mkdir(parents=True)
    recipe = name.rsplit("-s", 1)[0].split("-", 1)[1]
    (folder / "config.json").write_text(json.dumps({"model": "resnet20", "method": method, "seed": seed,
                                                    "epochs": epochs, "lr": lr, "scale_lr": scale_lr,
                                                    "holdout": images if split == "holdout" else None}))
    metrics = {"model": "resnet20", "method": method, "seed": seed, "recipe": recipe, "epochs": epochs,
               "eval_split": split, f"{split}_accuracy": acc, f"{split}_images": images}
    if split == "holdout":
        metrics["test_accuracy"] = None  # what the training writes: the test split was never evaluated
    (folder / "metrics.json").write_text(json.dumps(metrics))


@pytest.fixture()
def search(tmp_path):
    plan = tmp_path / "results" / "lr-search"
    write_run(plan, "resnet20-adapt-s0", "fp", 90.0, lr=0.01, epochs=2)
    write_run(plan, "resnet20-ttq-lr0.02-scalelr0.01-s0", "ttq", 85.0, lr=0.02, scale_lr=0.01)
    write_run(plan, "resnet20-ttq-lr0.05-scalelr0.01-s0", "ttq", 88.0, lr=0.05, scale_lr=0.01)
    write_run(plan, "resnet20-ttq-lr0.1-scalelr0.01-s0", "ttq", 89.0, lr=0.1, scale_lr=0.01)
    for seed, (a, b) in enumerate([(88.0, 87.0), (88.4, 87.2)]):
        write_run(plan, f"resnet20-twn-lr0.05-s{seed}", "twn", a, seed, lr=0.05)
        write_run(plan, f"resnet20-twn-lr0.1-s{seed}", "twn", b, seed, lr=0.1)
    return plan


def test_the_best_recipe_and_binomial_gaps_match_a_hand_worked_example(search):
    # One seed each: a gap's interval comes from the binomial noise of 5000 held-out images.
    # se^2 = 100^2 p (1 - p) / 5000:  0.1958 at 89 %, 0.2112 at 88 %, 0.2550 at 85 %.
    # lr 0.05 - best: -1.0 +- 1.959964 sqrt(0.1958 + 0.2112) = -1.0 +- 1.250389 -> [-2.250389, +0.250389]:
    #   holds 0, not resolved.
    # lr 0.02 - best: -4.0 +- 1.959964 sqrt(0.1958 + 0.2550) = -4.0 +- 1.315952 -> [-5.315952, -2.684048]:
    #   resolved.
    rows = {r["recipe"]: r for r in search_rows(search)}
    best = rows["ttq-lr0.1-scalelr0.01"]
    assert best["best"] and best["gap"] is None and best["images"] == 5000
    near, far = rows["ttq-lr0.05-scalelr0.01"], rows["ttq-lr0.02-scalelr0.01"]
    assert (near["gap"]["low"], near["gap"]["high"]) == pytest.approx((-2.250389, 0.250389), abs=1e-6)
    assert (far["gap"]["low"], far["gap"]["high"]) == pytest.approx((-5.315952, -2.684048), abs=1e-6)
    assert near["resolved"] is False and far["resolved"] is True and near["gap"]["how"] == "binomial"
    assert rows["adapt"]["best"] and rows["adapt"]["alone"]  # nothing searched for FP


def test_a_searched_fp_recipe_competes_with_its_own_budget_not_with_the_adaptation(search, capsys):
    """The FP control's searched recipes (4 epochs from the adaptation) have a best of their own; the adaptation
    (2 epochs, scoring higher on images its pretrained start has seen) is not one of their rivals."""
    write_run(search, "resnet20-fp-lr0.02-s0", "fp", 89.5, lr=0.02)
    write_run(search, "resnet20-fp-lr0.1-s0", "fp", 87.0, lr=0.1)
    rows = {r["recipe"]: r for r in search_rows(search)}
    assert rows["adapt"]["best"] and rows["adapt"]["alone"]
    assert rows["fp-lr0.02"]["best"] and not rows["fp-lr0.02"]["alone"]
    assert rows["fp-lr0.1"]["gap"]["diff"] == pytest.approx(-2.5) and rows["fp-lr0.1"]["resolved"] is True
    best = best_settings(search)
    assert best[("resnet20", "fp")] == {"lr": 0.02}  # the searched one, never the adaptation's lr 0.01
    text = render_search(search)
    assert "FP resnet20: adapt (lr 0.01), not searched." in text
    assert "FP resnet20: best fp-lr0.02 (lr 0.02); every other recipe is resolved below it." in text
    # a search run still going is counted in its own search, not in the adaptation's line
    write_run(search, "resnet20-fp-lr0.05-s0", "fp", 88.0, lr=0.05)
    (search / "resnet20-fp-lr0.05-s0" / "metrics.json").unlink()
    rows = {r["recipe"]: r for r in search_rows(search)}
    assert (rows["adapt"]["unfinished"], rows["fp-lr0.02"]["unfinished"], rows["fp-lr0.1"]["unfinished"]) == (0, 1, 1)
    text = render_search(search)
    assert "FP resnet20: adapt (lr 0.01), not searched." in text
    assert "best fp-lr0.02 (lr 0.02); every other recipe is resolved below it (1 started run(s) of this model, " \
        "method and budget unfinished)." in text
    (search / "resnet20-fp-lr0.05-s0" / "config.json").unlink()
    (search / "resnet20-fp-lr0.05-s0").rmdir()
    # a method searched at two budgets has no single best setting to hand to a plan
    write_run(search, "resnet20-fp-lr0.05-s0", "fp", 88.0, lr=0.05, epochs=8)
    write_run(search, "resnet20-fp-lr0.01-s0", "fp", 88.1, lr=0.01, epochs=8)
    with pytest.raises(ValueError, match="searched at more than one budget"):
        best_settings(search)


def test_two_seeds_a_side_use_welch_over_seeds(search):
    rows = {r["recipe"]: r for r in search_rows(search)}
    assert rows["twn-lr0.05"]["best"] and rows["twn-lr0.05"]["mean"] == pytest.approx(88.2)
    gap = rows["twn-lr0.1"]["gap"]
    w = welch_interval([87.0, 87.2], [88.0, 88.4], 0.95)  # the tested Welch interval (test_reproduction_stats)
    assert gap["how"] == "Welch over seeds" and gap["diff"] == pytest.approx(-1.1)
    assert (gap["low"], gap["high"]) == pytest.approx((w.low, w.high))


def test_best_settings_and_the_rendered_report(search, capsys):
    assert best_settings(search)[("resnet20", "ttq")] == {"lr": 0.1, "scale_lr": 0.01}
    assert best_settings(search)[("resnet20", "twn")] == {"lr": 0.05}
    text = render_search(search)
    assert "ttq-lr0.05-scalelr0.01  0.05  0.01      4       88.00 (n=1)" in text
    assert "-1.00 [-2.25, +0.25] n.r." in text and "-4.00 [-5.32, -2.68]" in text
    assert "FP resnet20: adapt (lr 0.01), not searched." in text
    assert "TTQ resnet20: best ttq-lr0.1-scalelr0.01 (lr 0.1, scale_lr 0.01); not resolved from " \
           "ttq-lr0.05-scalelr0.01" in text
    # `ttq table` recognises a search plan and prints this report, not the paper table
    assert main(["table", str(search)]) == 0
    assert capsys.readouterr().out == text


def test_the_reproduction_table_refuses_held_out_and_mixed_splits(search, tmp_path):
    with pytest.raises(ValueError, match="evaluated on the holdout split.*learning-rate search"):
        table_rows(search)
    write_run(search, "resnet20-ttq-s5", "ttq", 91.0, seed=5, split="test", images=10000)
    for call in (lambda: table_rows(search), lambda: search_rows(search)):
        with pytest.raises(ValueError, match="mixes runs evaluated on different splits"):
            call()
    empty = tmp_path / "results" / "started"
    (empty / "resnet20-ttq-s0").mkdir(parents=True)
    (empty / "resnet20-ttq-s0" / "config.json").write_text(json.dumps({"model": "resnet20", "method": "ttq"}))
    with pytest.raises(ValueError, match="no finished run yet"):
        search_rows(empty)
