"""ttq_lib.reproduction.table and `ttq table`, on small fake results/<plan>/ folders written here."""
import json

import pytest

from ttq_lib.cli import main
from ttq_lib.reproduction.paper import PAPER_CIFAR10_ERROR
from ttq_lib.reproduction.table import read_runs, render_markdown, render_table, render_text, table_rows


def write_run(plan, name, model, method, acc=None, seed=0, recipe=None, epochs=160, seed_in_metrics=True):
    """A run folder as the runner leaves it: config.json always, metrics.json once finished (acc given)."""
    folder = plan / name
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model": model, "method": method, "seed": seed,
                                                    "epochs": epochs}))
    if acc is not None:
        metrics = {"model": model, "method": method, "test_accuracy": acc, "epochs": epochs}
        if seed_in_metrics:
            metrics["seed"] = seed
        if recipe is not None:
            metrics["recipe"] = recipe
        (folder / "metrics.json").write_text(json.dumps(metrics))
    return folder


@pytest.fixture()
def plan(tmp_path):
    """ResNet-20: FP and TTQ with 3 seeds, TWN with 2 (and 1 unfinished); ResNet-56: one FP, one TTQ run."""
    plan = tmp_path / "results" / "cifar10"
    for seed, acc in enumerate([91.0, 91.4, 90.8]):
        write_run(plan, f"resnet20-adapt-s{seed}", "resnet20", "fp", acc, seed, "adapt")
    for seed, acc in enumerate([90.1, 90.9, 90.6]):
        write_run(plan, f"resnet20-ttq-s{seed}", "resnet20", "ttq", acc, seed, "ttq")
    for seed, acc in enumerate([89.9, 90.0]):
        write_run(plan, f"resnet20-twn-s{seed}", "resnet20", "twn", acc, seed, "twn")
    # Unfinished, with an epoch already logged: its 50 % must not reach the TWN mean.
    unfinished = write_run(plan, "resnet20-twn-s2", "resnet20", "twn", None, 2)
    (unfinished / "history.jsonl").write_text(json.dumps({"epoch": 1, "test_acc": 50.0}) + "\n")
    write_run(plan, "resnet56-adapt-s0", "resnet56", "fp", 93.1, 0, "adapt")
    write_run(plan, "resnet56-ttq-s0", "resnet56", "ttq", 93.4, 0, "ttq")
    return plan


def test_rendered_markdown_holds_the_hand_worked_numbers(plan):
    # Errors are 100 - accuracy.
    # FP  ResNet-20: 9.0, 8.6, 9.2   -> mean 8.933, sample std sqrt(0.186667 / 2) = 0.306 -> "8.93 ± 0.31 (n=3)"
    # TTQ ResNet-20: 9.9, 9.1, 9.4   -> mean 9.467, sample std sqrt(0.326667 / 2) = 0.404 -> "9.47 ± 0.40 (n=3)"
    # TWN ResNet-20: 10.1, 10.0      -> mean 10.05, sample std sqrt(0.005)       = 0.071 -> "10.05 ± 0.07 (n=2)"
    # TTQ - FP = +0.533; it is the hand-worked example of test_reproduction_stats (the same numbers, as
    #   accuracies FP - TTQ): se 0.292499, df 3.723077, t 2.859817 -> [-0.303160, +1.369826] -> "[-0.30, +1.37]"
    # TTQ - TWN = 9.466667 - 10.05 = -0.583333; se^2 = 0.163333 / 3 + 0.005 / 2 = 0.054444 + 0.0025 = 0.056944,
    #   se 0.238630; df = 0.056944^2 / (0.054444^2 / 2 + 0.0025^2 / 1) = 2.178703; t_{0.975, 2.1787} = 3.981539;
    #   half-width 0.950116 -> [-1.533449, +0.366783] -> "[-1.53, +0.37]"
    # Paper TTQ - FP: 8.87 - 8.23 = +0.64 (ResNet-20), 6.44 - 6.80 = -0.36 (ResNet-56).
    text = render_table(plan, markdown=True)
    lines = text.splitlines()
    assert lines[0] == ("| model | FP paper | FP ours | TTQ paper | TTQ ours | TWN ours | TTQ - FP paper | "
                        "TTQ - FP ours [95 % CI] | TTQ - TWN ours [95 % CI] |")
    assert lines[2] == ("| ResNet-20 | 8.23 | 8.93 ± 0.31 (n=3) | 8.87 | 9.47 ± 0.40 (n=3) | "
                        "10.05 ± 0.07 (n=2), 1 unfinished | +0.64 | +0.53 [-0.30, +1.37] | -0.58 [-1.53, +0.37] |")
    assert lines[3] == ("| ResNet-32 | 7.67 | not run | 7.63 | not run | not run | -0.04 | n/a (not run) | "
                        "n/a (not run) |")
    assert lines[4] == ("| ResNet-44 | 7.18 | not run | 7.02 | not run | not run | -0.16 | n/a (not run) | "
                        "n/a (not run) |")
    assert lines[5] == ("| ResNet-56 | 6.80 | 6.90 (n=1) | 6.44 | 6.60 (n=1) | not run | -0.36 | n/a (n=1) | "
                        "n/a (not run) |")
    assert "negative = TTQ better" in text and "95 % Welch t interval" in text
    assert ("- ResNet-20: TTQ vs FP: no difference shown (interval includes 0; the paper's +0.64 lies inside it). "
            "TTQ vs TWN: no difference shown (interval includes 0).") in lines
    assert "- ResNet-32: not run." in lines
    assert any(line.startswith("- ResNet-56: TTQ vs FP: not enough seeds (n = 1 TTQ, 1 FP") for line in lines)


def test_rows_as_dicts_carry_the_exact_statistics(plan):
    rows = table_rows(plan)
    assert [r["model"] for r in rows] == ["resnet20", "resnet32", "resnet44", "resnet56"]
    r20 = rows[0]
    assert r20["recipes"] == {"fp": "adapt", "ttq": "ttq", "twn": "twn"}
    assert r20["paper"] == {"fp": 8.23, "ttq": 8.87, "ttq-fp": 0.64}
    assert r20["ttq"]["mean"] == pytest.approx(9.466667, abs=1e-6)
    assert r20["ttq"]["std"] == pytest.approx((49 / 300) ** 0.5, abs=1e-9)
    assert r20["ttq"]["seeds"] == [0, 1, 2] and r20["ttq"]["runs"][0] == "resnet20-ttq-s0"
    # the unfinished TWN run is counted, not averaged (its logged 50 % would drag the mean to ~23)
    assert (r20["twn"]["n"], r20["twn"]["unfinished"]) == (2, 1)
    assert r20["twn"]["mean"] == pytest.approx(10.05, abs=1e-9)
    diff = r20["ttq-fp"]
    assert (diff["diff"], diff["low"], diff["high"], diff["df"]) == (
        pytest.approx(0.533333, abs=1e-6), pytest.approx(-0.303160, abs=1e-6), pytest.approx(1.369826, abs=1e-6),
        pytest.approx(242 / 65, abs=1e-9))
    assert r20["ttq-twn"]["low"] == pytest.approx(-1.533449, abs=1e-6)
    assert r20["ttq-twn"]["df"] == pytest.approx(2.178703, abs=1e-6)
    r56 = rows[3]
    # n = 1: the point difference is kept for programs, but no interval is claimed
    assert r56["ttq-fp"]["diff"] == pytest.approx(-0.3, abs=1e-9) and r56["ttq-fp"]["low"] is None
    assert r56["fp"]["std"] is None and r56["ttq-fp"]["cell"] == "n/a (n=1)"


def test_plain_text_is_aligned_ascii(plan):
    text = render_text(table_rows(plan))
    text.encode("ascii")  # terminals without UTF-8 must show it too
    header, rule, r20 = text.splitlines()[:3]
    assert header.index("FP ours") == r20.index("8.93 +- 0.31 (n=3)")
    assert header.index("TTQ - FP ours") == r20.index("+0.53 [-0.30, +1.37]")
    assert set(rule) == {"-", " "}
    assert "ResNet-56: TTQ vs FP: not enough seeds" in text


def test_verdicts_when_the_interval_excludes_zero(tmp_path):
    plan = tmp_path / "p"
    for seed, (fp, ttq) in enumerate([(92.0, 93.0), (91.9, 92.9), (91.8, 92.8)]):  # TTQ one point better
        write_run(plan, f"fp{seed}", "resnet32", "fp", fp, seed)
        write_run(plan, f"ttq{seed}", "resnet32", "ttq", ttq, seed)
        write_run(plan, f"twn{seed}", "resnet32", "twn", ttq + 0.5, seed)  # TWN half a point better than TTQ
    row = table_rows(plan)[1]
    # errors: FP 8.0, 8.1, 8.2; TTQ 7.0, 7.1, 7.2; equal variances 0.01, so df = 4 and
    # the interval is -1 -+ 2.776445 * sqrt(0.02 / 3) = -1 -+ 0.226696
    assert (row["ttq-fp"]["low"], row["ttq-fp"]["high"]) == (pytest.approx(-1.226696, abs=1e-6),
                                                             pytest.approx(-0.773304, abs=1e-6))
    assert row["ttq-fp"]["verdict"] == ("TTQ better than FP (interval excludes 0; the paper's -0.04 lies "
                                        "outside it)")
    assert row["ttq-twn"]["verdict"] == "TTQ worse than TWN (interval excludes 0)"
    assert row["ttq-fp"]["cell"] == "-1.00 [-1.23, -0.77]"


def test_old_metrics_take_seed_from_config_and_method_as_recipe(tmp_path):
    plan = tmp_path / "old"
    write_run(plan, "fp", "resnet20", "fp", 90.0, seed=7, seed_in_metrics=False)
    write_run(plan, "fp-again", "resnet20", "fp", 90.2, seed=8, seed_in_metrics=False)
    finished, unfinished = read_runs(plan)
    assert sorted((r["seed"], r["recipe"]) for r in finished) == [(7, "fp"), (8, "fp")]
    assert unfinished == []
    # the same seed in both configs is caught, which shows the seed really came from config.json
    write_run(plan, "fp-copy", "resnet20", "fp", 90.1, seed=7, seed_in_metrics=False)
    with pytest.raises(ValueError, match=r"runs fp and fp-copy are both resnet20 fp, recipe 'fp', seed 7: "
                                         r"a seed counts once"):
        read_runs(plan)


def test_different_recipes_get_their_own_rows(tmp_path):
    plan = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(plan, f"fp-s{seed}", "resnet20", "fp", 91.0 + seed, seed, "adapt")
        write_run(plan, f"lr05-s{seed}", "resnet20", "ttq", 90.0 + seed, seed, "ttq-lr0.05")
        write_run(plan, f"lr1-s{seed}", "resnet20", "ttq", 89.0 + seed, seed, "ttq-lr0.1")
    rows = [r for r in table_rows(plan) if r["model"] == "resnet20"]
    assert [r["label"] for r in rows] == ["ResNet-20 (ttq-lr0.05)", "ResNet-20 (ttq-lr0.1)"]
    # each row averages one recipe only: errors 10, 9 (lr 0.05) and 11, 10 (lr 0.1), never all four
    assert [r["ttq"]["mean"] for r in rows] == [pytest.approx(9.5), pytest.approx(10.5)]
    assert [r["ttq"]["n"] for r in rows] == [2, 2]
    assert rows[0]["fp"]["mean"] == rows[1]["fp"]["mean"] == pytest.approx(8.5)
    text = render_markdown(table_rows(plan))
    assert "| ResNet-20 (ttq-lr0.1) | 8.23 | 8.50 ± 0.71 (n=2) | 8.87 | 10.50 ± 0.71 (n=2) |" in text
    assert "Recipes (epochs each trains from its start): FP adapt (160); TTQ ttq-lr0.05 (160), ttq-lr0.1 (160)." in text


def test_a_same_budget_fp_control_gets_its_own_row_and_its_unfinished_runs_are_counted_there(tmp_path):
    """Two FP recipes (the adaptation the ternary runs start from, and FP trained with their budget): TTQ is
    compared with each in its own row; a run of the control still going is counted in the control's row only."""
    plan = tmp_path / "cifar10"
    for seed in (0, 1):
        write_run(plan, f"resnet20-adapt-s{seed}", "resnet20", "fp", 88.0 + seed, seed, "adapt")
        write_run(plan, f"resnet20-ttq-s{seed}", "resnet20", "ttq", 88.5 + seed, seed, "ttq")
    going = write_run(plan, "resnet20-fp-s0", "resnet20", "fp", None, 0)
    (going / "config.json").write_text(json.dumps({"model": "resnet20", "method": "fp", "seed": 0,
                                                   "epochs": 12, "recipe": "fp"}))
    rows = {r["label"]: r for r in table_rows(plan) if r["model"] == "resnet20"}
    assert list(rows) == ["ResNet-20 (adapt)", "ResNet-20 (fp)"]
    assert (rows["ResNet-20 (adapt)"]["fp"]["n"], rows["ResNet-20 (adapt)"]["fp"]["unfinished"]) == (2, 0)
    assert (rows["ResNet-20 (fp)"]["fp"]["n"], rows["ResNet-20 (fp)"]["fp"]["unfinished"]) == (0, 1)
    assert rows["ResNet-20 (fp)"]["ttq-fp"]["cell"] == "n/a (not run)"
    text = render_markdown(table_rows(plan))
    assert "| ResNet-20 (fp) | 8.23 | 1 unfinished | 8.87 | 11.00 ± 0.71 (n=2) |" in text
    # the legend names each recipe's epochs, the unfinished control's from its config.json
    assert "Recipes (epochs each trains from its start): FP adapt (160), fp (12); TTQ ttq (160)." in text
    for seed in (0, 1):  # the control finishes: errors 11.2 and 10.2 against TTQ's 11.5 and 10.5
        folder = plan / f"resnet20-fp-s{seed}"
        if not folder.exists():
            write_run(plan, folder.name, "resnet20", "fp", None, seed)
        (folder / "metrics.json").write_text(json.dumps({"model": "resnet20", "method": "fp", "seed": seed,
                                                         "test_accuracy": 88.8 + seed, "epochs": 12,
                                                         "recipe": "fp"}))
    rows = {r["label"]: r for r in table_rows(plan) if r["model"] == "resnet20"}
    assert rows["ResNet-20 (fp)"]["fp"]["mean"] == pytest.approx(10.7)
    assert rows["ResNet-20 (fp)"]["ttq-fp"]["diff"] == pytest.approx(0.3)
    assert rows["ResNet-20 (adapt)"]["ttq-fp"]["diff"] == pytest.approx(-0.5)


def test_one_recipe_run_for_different_epochs_is_split(tmp_path):
    plan = tmp_path / "epochs"
    write_run(plan, "short", "resnet20", "ttq", 85.0, 0, epochs=12)
    write_run(plan, "long", "resnet20", "ttq", 91.0, 1, epochs=160)
    labels = [r["label"] for r in table_rows(plan) if r["model"] == "resnet20"]
    assert labels == ["ResNet-20 (ttq (12 epochs))", "ResNet-20 (ttq (160 epochs))"]
    assert "Recipes (epochs each trains from its start): TTQ ttq (12 epochs), ttq (160 epochs)." in render_table(plan)


def test_missing_empty_and_wrong_folders_say_what_a_plan_folder_holds(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nowhere does not exist: .*one folder per run"):
        table_rows(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"empty holds no run folders .*config.json.*metrics.json"):
        table_rows(tmp_path / "empty")
    write_run(tmp_path / "results" / "cifar10", "r", "resnet20", "fp", 90.0)
    with pytest.raises(ValueError, match=r"pass one of them: .*results/cifar10"):
        table_rows(tmp_path / "results")  # results/ itself instead of results/<plan>
    bad = write_run(tmp_path / "bad", "r", "resnet20", "fp", 90.0)
    (bad / "metrics.json").write_text(json.dumps({"model": "resnet20", "method": "fp"}))
    with pytest.raises(ValueError, match=r"metrics.json lacks test_accuracy"):
        table_rows(tmp_path / "bad")


def test_paper_numbers_live_in_one_place():
    from ttq_lib.course import runs

    assert runs.PAPER_CIFAR10_ERROR is PAPER_CIFAR10_ERROR
    assert PAPER_CIFAR10_ERROR["resnet56"] == {"fp": 6.80, "ttq": 6.44}


def test_cli_table(plan, capsys):
    assert main(["table", str(plan)]) == 0
    out = capsys.readouterr().out
    assert "ResNet-20  8.23      8.93 +- 0.31 (n=3)" in out and "+0.53 [-0.30, +1.37]" in out
    assert main(["table", str(plan), "--markdown"]) == 0
    assert "| ResNet-56 | 6.80 | 6.90 (n=1) |" in capsys.readouterr().out


def test_cli_table_missing_folder_exits_2_with_the_reason(tmp_path, capsys):
    assert main(["table", str(tmp_path / "results" / "nope")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ttq table: error: ") and "nope does not exist" in err and "results/<plan>/" in err


def test_cli_table_help_explains_the_numbers(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["table", "--help"])
    assert exit_.value.code == 0
    help_text = " ".join(capsys.readouterr().out.split())
    assert "negative = TTQ better" in help_text and "Welch t interval" in help_text
    assert "unfinished runs are counted, never averaged" in help_text
