"""ttq_lib.course: threshold statistics and the accuracy sweep (notebook 01), gradient aids (notebook 02),
exercise checks."""
import copy
import math
import subprocess
import sys

import pytest
import torch

import ttq_lib
from ttq_lib.course import exercises, gradient_aids, threshold_stats


def test_region_statistics_by_hand():
    w = torch.tensor([0.9, -0.03, -0.6, 0.02, 0.4, -1.0])
    assert threshold_stats.region_shares(w, 0.05) == {"neg": 2 / 6, "zero": 2 / 6, "pos": 2 / 6}
    assert threshold_stats.region_means(w, 0.05) == pytest.approx((0.65, 0.8))
    q = threshold_stats.ternary_approximation(w, 0.05, 0.65, 0.8)
    expected = math.sqrt(0.25 ** 2 * 2 + 0.03 ** 2 + 0.2 ** 2 * 2 + 0.02 ** 2) / float(w.norm())
    assert threshold_stats.ternary_error(w, 0.05) == pytest.approx(expected, rel=1e-6)
    assert torch.equal(q, torch.tensor([0.65, 0, -0.8, 0, 0.65, -0.8]))
    assert threshold_stats.region_means(w, 5.0) == (0.0, 0.0)  # empty regions


def test_error_is_zero_for_a_ternary_tensor_and_best_with_region_means():
    w = torch.tensor([1.5, 0.0, -0.5, 1.5, 0.0, -0.5])
    assert threshold_stats.ternary_error(w, 0.1) == 0.0
    g = torch.randn(500, generator=torch.Generator().manual_seed(0))
    d = ttq_lib.threshold_max(g, 0.05)
    best = threshold_stats.ternary_error(g, d)
    wp, wn = threshold_stats.region_means(g, d)
    for dp, dn in ((0.1, 0), (0, -0.1), (0.05, 0.05)):
        assert threshold_stats.ternary_error(g, d, wp + dp, wn + dn) > best


def test_threshold_sweep_and_rule_summary():
    g = torch.randn(2000, generator=torch.Generator().manual_seed(1))
    sweep = threshold_stats.threshold_sweep(g, [0.01, 0.05, 0.2, 0.5])
    assert sweep["zero"] == sorted(sweep["zero"])
    assert sweep["threshold"][1] == pytest.approx(0.05 * float(g.abs().max()))
    rows = threshold_stats.rule_summary(g, t=0.05, sparsities=(0.0, 0.3))
    assert [r["rule"].split()[0] for r in rows] == ["TTQ", "TWN", "sparsity", "sparsity"]
    assert rows[0]["t_equiv"] == pytest.approx(0.05)
    assert rows[1]["threshold"] == pytest.approx(float(ttq_lib.threshold_twn(g)))
    assert rows[2]["zero"] == 0.0 and rows[3]["zero"] == pytest.approx(0.3, abs=1e-3)


def test_autograd_reference_matches_the_hand_written_backward():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(300, generator=gen, dtype=torch.float64)
    g = torch.randn(300, generator=gen, dtype=torch.float64)
    d = ttq_lib.threshold_max(w, 0.05)
    hand = gradient_aids.ttq_gradients(w, 0.7, 1.3, d, g)
    auto = gradient_aids.quantizer_gradients(lambda x, a, b: gradient_aids.ttq_autograd_reference(x, a, b, d), w, 0.7, 1.3, g)
    for h, a in zip(hand, auto):
        assert torch.allclose(h, a, rtol=0, atol=1e-12)
    assert float(hand[2]) == pytest.approx(-float(g[w < -d].sum()))


def test_wrong_sign_flips_only_dwn():
    w = torch.tensor([0.9, -0.03, -0.6, 0.02, 0.4, -1.0])
    c = torch.arange(1.0, 7.0)
    grads = []
    for fn in (ttq_lib.ternarize, gradient_aids.ternarize_wrong_sign):
        wl = w.clone().requires_grad_(True)
        wp, wn = torch.tensor(1.2, requires_grad=True), torch.tensor(0.8, requires_grad=True)
        (c * fn(wl, wp, wn, 0.05)).sum().backward()
        grads.append((wl.grad, float(wp.grad), float(wn.grad)))
    (gw, gp, gn), (bw, bp, bn) = grads
    assert torch.equal(gw, bw) and gp == bp == 6.0
    assert gn == -9.0 and bn == 9.0


def test_finite_difference():
    x = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64)
    f = lambda: (x ** 2).sum()  # noqa: E731
    assert gradient_aids.finite_difference(f, x, 1) == pytest.approx(4.0)
    assert torch.equal(x, torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))  # restored
    s = torch.tensor(2.0, dtype=torch.float64)
    assert gradient_aids.finite_difference(lambda: s ** 3, s) == pytest.approx(12.0, rel=1e-6)


def test_toy_fit_converges_with_the_right_sign_and_diverges_with_the_wrong_one():
    toy = gradient_aids.toy_target(n=400, wp=1.5, wn=0.5, seed=0)
    right = gradient_aids.fit_ternary_toy(toy["w"], toy["y"], steps=80, lr_scales=5e-4)
    wrong = gradient_aids.fit_ternary_toy(toy["w"], toy["y"], steps=80, lr_scales=5e-4, wrong_sign=True)
    assert right["wp"][-1] == pytest.approx(1.5, abs=0.02) and right["wn"][-1] == pytest.approx(0.5, abs=0.02)
    assert right["loss"][-1] < right["loss"][0]
    assert wrong["wp"][-1] == pytest.approx(right["wp"][-1])
    assert wrong["wn"][-1] > 10 and wrong["loss"][-1] > wrong["loss"][0]
    assert "agreement" not in right


def test_toy_fit_learns_assignments():
    toy = gradient_aids.toy_target(n=500, seed=1, correlation=0.5)
    fit = gradient_aids.fit_ternary_toy(toy["w"], toy["y"], steps=100, lr_scales=2.5e-4, lr_latent=0.02,
                                target_codes=toy["codes"])
    assert fit["agreement"][-1] > fit["agreement"][0] + 0.2
    assert len(fit["step"]) == 101 and all(v >= 1e-4 for v in fit["wn"])
    with pytest.raises(ValueError):
        gradient_aids.toy_target(correlation=2.0)


def test_check_exercise():
    ref = lambda x: x * 2  # noqa: E731
    cases = [(torch.tensor([1.0, 2.0]),), (torch.tensor(3.0),)]
    assert exercises.check_exercise(lambda x: None, ref, cases).startswith("not attempted")
    assert exercises.check_exercise(lambda x: x + x, ref, cases).startswith("correct")
    with pytest.raises(AssertionError, match="case 0"):
        exercises.check_exercise(lambda x: x * 3, ref, cases)
    with pytest.raises(AssertionError, match="shape"):
        exercises.check_exercise(lambda x: x.sum(), ref, cases)
    with pytest.raises(exercises.ExerciseMismatch, match=r"case 0: expected 1 output\(s\), got 2"):
        exercises.check_exercise(lambda x: (x, x), ref, cases)


def test_check_exercise_fails_a_wrong_answer_under_python_O():
    # python -O strips assert statements: the checker must not rely on them
    code = ("import sys, torch\n"
            "if sys.flags.optimize != 1:\n"
            "    sys.exit('not running under -O')\n"
            "from ttq_lib.course import exercises\n"
            "try:\n"
            "    exercises.check_exercise(lambda x: x * 3, lambda x: x * 2, [(torch.tensor([1.0, 2.0]),)])\n"
            "except AssertionError as exc:\n"
            "    print(type(exc).__name__, exc)\n"
            "    sys.exit(3)\n"
            "print('marked correct')\n")
    out = subprocess.run([sys.executable, "-O", "-c", code], capture_output=True, text=True, timeout=120,
                         check=False)
    assert out.returncode == 3, out.stdout + out.stderr
    assert out.stdout.strip() == "ExerciseMismatch case 0, output 0: max difference 2 from ttq_lib's answer"


def test_check_exercise_not_attempted_and_grading(monkeypatch):
    ref = lambda x: x * 2  # noqa: E731
    cases = [(torch.tensor([1.0, 2.0]),)]

    def stub(x):  # what nbgrader's release leaves in the answer cell
        raise NotImplementedError()

    monkeypatch.delenv(exercises.ENV_GRADING, raising=False)
    assert exercises.check_exercise(stub, ref, cases) == exercises.NOT_ATTEMPTED
    monkeypatch.setenv(exercises.ENV_GRADING, "1")  # ttq-course autograde: a blank answer earns nothing
    with pytest.raises(exercises.ExerciseNotAttempted, match="TTQ_GRADING"):
        exercises.check_exercise(stub, ref, cases)
    with pytest.raises(exercises.ExerciseNotAttempted):
        exercises.check_property(lambda x: None, lambda got, x: None, cases)
    assert exercises.check_exercise(lambda x: x + x, ref, cases).startswith("correct")
    with pytest.raises(ValueError, match="cases is empty"):
        exercises.check_exercise(lambda x: x, ref, [])


def test_zero_share_problem_accepts_any_threshold_with_the_asked_share():
    w = torch.tensor([0.3, -0.1, 0.2, -0.4, 0.05])  # |w| sorted: 0.05, 0.1, 0.2, 0.3, 0.4
    # r = 0.4 asks for 2 of 5 zeros: any delta in [0.1, 0.2) is right, whatever rounding a library uses
    for delta in (0.1, 0.15, 0.1999):
        assert threshold_stats.zero_share_problem(delta, w, 0.4) is None
    assert "a share 0.6000 of the 5 weights is zero (3 weights), not r = 0.4 (2 weights" in \
        threshold_stats.zero_share_problem(0.2, w, 0.4)
    assert threshold_stats.zero_share_problem(0.09, w, 0.4) is not None  # 1 zero
    assert threshold_stats.zero_share_problem(0.0, w, 0.0) is None
    assert "must be a number" in threshold_stats.zero_share_problem("x", w, 0.4)
    # 9216 weights, r = 0.1 -> 921.6 zeros: 921 and 922 are both right, 919 is not
    big = torch.randn(9216, generator=torch.Generator().manual_seed(0))
    a = big.abs().sort().values
    assert threshold_stats.zero_share_problem(a[920], big, 0.1) is None        # 921 zeros
    assert threshold_stats.zero_share_problem(a[921], big, 0.1) is None        # 922 zeros
    assert threshold_stats.zero_share_problem(a[918], big, 0.1) is not None    # 919 zeros: 2.6 weights off
    with pytest.raises(exercises.ExerciseMismatch, match="case 0: with your threshold"):
        exercises.check_property(lambda w, r: float(w.abs().max()), threshold_stats.zero_share_problem, [(big, 0.3)])


def test_accuracy_sweep_on_the_pretrained_resnet20(resnet20_th, cifar):
    """Notebook 01, section 7, on 200 real test images: every point ternarizes, recalibrates and scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttq_lib.course import sweep_plots, threshold_sweep

    model, meta = ttq_lib.load_model(resnet20_th)
    sub = cifar.subset(None, 100, seed=0)
    first = threshold_sweep.ternary_point(model, sub, meta["mean"], meta["std"], t=0.05, recal_images=128,
                                          before=True)
    assert first["accuracy_before"] <= 20 < 35 <= first["accuracy"]  # collapse, then batch norm brings it back
    assert first["t_equiv"] == pytest.approx(0.05, abs=1e-6)
    assert not any(isinstance(m, ttq_lib.TernaryConv2d) for m in model.modules())
    sweep = threshold_sweep.accuracy_sweep(model, sub, meta["mean"], meta["std"], ts=(0.05,), rs=(0.4,),
                                           recal_images=128)
    assert sweep["t"][0]["accuracy"] == first["accuracy"]  # same calibration images, same model: deterministic
    assert sweep["r"][0]["zero"] == pytest.approx(0.4, abs=1e-3)  # the fixed-sparsity rule over all layers
    twn = sweep["twn"]
    stats = ttq_lib.layer_stats(ttq_lib.ternarize_model(copy.deepcopy(model), method="twn"))
    assert twn["zero"] == pytest.approx(sum(r["zero"] * r["numel"] for r in stats) / sum(r["numel"] for r in stats))
    assert sweep["fp"] > 80 and sweep["test_images"] == 100
    plt.close("all")
    ax_t, ax_r = sweep_plots.plot_accuracy_sweep(sweep)
    labels = [t.get_text() for t in ax_r.get_legend().get_texts()]
    assert "paper: best r 0.3-0.5 (after training)" in labels and any(lb.startswith("TWN") for lb in labels)
    assert ax_t.get_xlabel().startswith("t") and ax_t.get_ylabel().startswith("test accuracy")
    plt.close("all")
    with pytest.raises(ValueError, match="recal_images"):
        threshold_sweep.ternary_point(model, sub, meta["mean"], meta["std"], recal_images=0)
