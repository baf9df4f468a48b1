"""torch.compile of ternary ResNets: one graph with no breaks, forward and backward, the gradients of eager mode.

The ternary layers read no value back from the tensors in their forward or backward pass (no ``.item()``, no
boolean indexing; see ttq_lib.layers), so dynamo traces a whole ternarized ResNet-20 as one graph, and
``fullgraph=True`` (which raises on any break) compiles it.  On a GPU the same property means a training step
never waits for the device.

Time: the ``test_inductor_*`` case compiles a forward and a backward graph with Inductor's C++ backend, which
CI always does with an empty cache: about 100 s on the 2-core machine (it includes Inductor's one-time start-up;
13-42 s with a warm cache, ``/tmp/torchinductor_*``).  Deselect it locally with ``-k 'not inductor'``.  The
``explain`` cases take 5-12 s each.
"""
import pytest
import torch
import torch._dynamo as dynamo
import torch.nn.functional as F

from ttq_lib import build_model, ternarize_model
from ttq_lib.quantizers import set_checks

#: The compiled and eager gradients are compared in float64, where the only difference left is the order in
#: which Inductor sums (it fuses batch norm's reductions, over up to 8 x 32 x 32 values per channel, into other
#: kernels): measured at most 1.1e-12 of a tensor's largest gradient.  The bound, 1e-7 of it, leaves 1e5 of room
#: and is still far below any real error in Eqs. 7-8: a wrong sign of dL/dWn changes that gradient by twice
#: itself, a missing Wp or Wn factor in Eq. 8 by 1 - Wp, where scale_init="mean" starts Wp, Wn at each region's
#: mean |w| (about 0.1).  Not float32: this randomly initialised ResNet-20 on a batch of 8 amplifies float32
#: rounding differences to 0.3 % of a typical gradient and to 10 % of a small Wp gradient (a sum with
#: cancellation), measured, so no float32 bound would both hold and catch an error.  (The explain cases run in
#: float32, the training dtype: graph breaks do not depend on the dtype.)
GRAD_RTOL = 1e-7
RULES = [("ttq", None), ("twn", None), ("ttq", 0.4), ("twn", 0.3)]


def _model(method, sparsity, dtype=torch.float32):
    torch.manual_seed(0)
    model = ternarize_model(build_model("resnet20"), method=method, sparsity=sparsity, scale_init="mean")
    return model.to(dtype).train()


def _batch(n=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, 32, 32, generator=g, dtype=dtype), torch.randint(0, 10, (n,), generator=g)


def _loss_and_grads(model, forward, x, y):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(forward(x), y)
    loss.backward()
    return loss.detach(), {name: p.grad.clone() for name, p in model.named_parameters()}


@pytest.fixture(autouse=True)
def fresh_dynamo():
    # every test compiles a new model: start from empty caches so no test hits the recompile limit of another
    dynamo.reset()
    previous = set_checks(False)  # the checks read values back: they are what would break the graph
    yield
    set_checks(previous)
    dynamo.reset()


@pytest.mark.parametrize("method,sparsity", RULES, ids=[f"{m}-{'t' if r is None else f'r{r}'}" for m, r in RULES])
def test_explain_finds_no_graph_break(method, sparsity):
    model = _model(method, sparsity)
    x, _ = _batch(4)
    report = dynamo.explain(model)(x)
    assert report.graph_break_count == 0, [r.reason for r in report.break_reasons]
    assert report.graph_count == 1


def test_debug_checks_do_break_the_graph():
    # the switch that brings the per-forward checks back also brings back their reads (and so the breaks):
    # proof that the test above would see a read if the forward had one
    model = _model("ttq", None)
    x, _ = _batch(4)
    set_checks(True)
    assert dynamo.explain(model)(x).graph_break_count > 0


@pytest.mark.parametrize("method", ["ttq", "twn"])
def test_fullgraph_forward_and_backward_trace_and_match_eager(method):
    """Both quantizers, traced as Inductor would trace them (dynamo with ``fullgraph=True``, then AOTAutograd's
    joint forward-backward graph, where a read in a custom backward would fail) but run by the ``aot_eager``
    backend, which generates no code: seconds instead of a cold Inductor compile per model."""
    model = _model(method, None, torch.float64)
    x, y = _batch(dtype=torch.float64)
    eager_loss, eager_grads = _loss_and_grads(model, model, x, y)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    loss, grads = _loss_and_grads(model, compiled, x, y)
    _assert_same_gradients(method, loss, grads, eager_loss, eager_grads)


def test_inductor_fullgraph_forward_backward_matches_eager():
    """TTQ through Inductor's C++ code generation (the path of ``ttq train --compile`` on a CPU).  TWN is traced
    the same way by the aot_eager case above; a cold Inductor compile of it cost CI about 45 s for little more."""
    method = "ttq"
    model = _model(method, None, torch.float64)
    x, y = _batch(dtype=torch.float64)
    eager_loss, eager_grads = _loss_and_grads(model, model, x, y)
    compiled = torch.compile(model, fullgraph=True)  # raises on a graph break, forward or backward
    loss, grads = _loss_and_grads(model, compiled, x, y)
    _assert_same_gradients(method, loss, grads, eager_loss, eager_grads)


def _assert_same_gradients(method, loss, grads, eager_loss, eager_grads):
    torch.testing.assert_close(loss, eager_loss, rtol=1e-12, atol=0)
    assert grads.keys() == eager_grads.keys()
    scales = [n for n in grads if n.endswith((".wp", ".wn"))]
    assert len(scales) == (36 if method == "ttq" else 0)  # 18 ternary layers; Eq. 7 gives each Wp, Wn a gradient
    for name, g in grads.items():
        ref = eager_grads[name]
        assert ref.abs().max() > 0, name  # a zero gradient would make the comparison empty
        torch.testing.assert_close(g, ref, rtol=0, atol=GRAD_RTOL * float(ref.abs().max()),
                                   msg=lambda m, name=name: f"{name}: {m}")


def test_a_ternary_layer_adds_few_operations_to_a_training_step():
    """On a GPU each operation of a step is a kernel launch; TTQFunction's docstring sets out 6 full-size ones
    in the forward and 5 in the backward per layer (and one foreach clamp for all the scales).  Counted below
    autograd over a real ResNet-20 training step, against the same step in full precision; the quantizer this
    replaced added 18 full-size and 26 in all per layer."""
    import sys
    from pathlib import Path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from op_count import count_ops

    layers = sum(1 for m in ternarize_model(build_model("resnet20")).modules() if hasattr(m, "quantized_weight"))
    fp = count_ops("resnet20", "fp", "eager", 32, 10)
    added = {}
    for method in ("ttq", "twn"):
        got = count_ops("resnet20", method, "eager", 32, 10)
        added[method] = (sum(got.full.values()) - sum(fp.full.values()),
                         sum(got.full.values()) + sum(got.scalar.values()) - sum(fp.full.values())
                         - sum(fp.scalar.values()))
    assert layers == 18
    assert added["ttq"][0] <= 11 * layers + 1, added  # + the one _foreach_clamp_min_ of all Wp, Wn
    assert added["ttq"][1] <= 21 * layers + 1, added
    assert added["twn"][0] <= 9 * layers, added
