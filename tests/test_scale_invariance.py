"""ttq_lib.course.scale_invariance (notebook 03): batch norm makes a layer's scale irrelevant, so
Wp * dL/dWp + Wn * dL/dWn ~= 0, and TWN's latent weights get larger gradients than TTQ's at Wp = Wn = 1."""
import copy

import torch

import ttq_lib
from ttq_lib.course.scale_invariance import layer_gradients
from ttq_lib.models import resnet20


def test_scale_gradients_cancel_and_twn_moves_faster():
    torch.manual_seed(0)
    fp = resnet20()
    x, y = torch.randn(16, 3, 16, 16), torch.randint(0, 10, (16,))   # small images: the identity does not care
    ttq = ttq_lib.ternarize_model(copy.deepcopy(fp), method="ttq")
    twn = ttq_lib.ternarize_model(copy.deepcopy(fp), method="twn")
    before = {k: v.clone() for k, v in ttq.state_dict().items()}
    rows_ttq, rows_twn = layer_gradients(ttq, x, y), layer_gradients(twn, x, y)
    assert len(rows_ttq) == 18
    for r in rows_ttq:
        # every ternary conv is followed by batch norm: the common-scale direction has (almost) no gradient
        assert abs(r["wp_gwp"] + r["wn_gwn"]) <= 1e-3 * (abs(r["wp_gwp"]) + abs(r["wn_gwn"])) + 1e-9
        assert abs(r["wp_gwp"]) > 1e-7   # ... while each scale alone does get one
    for a, b in zip(rows_ttq, rows_twn):
        # TWN's alpha ~ mean|w| ~ 0.1 of a freshly initialised layer: its latent gradient is several times larger
        assert b["scale"] < 0.3 and b["rel_grad"] > 3 * a["rel_grad"]
    # nothing of the model changed: no gradient left behind, running statistics as before
    assert all(p.grad is None for p in ttq.parameters())
    assert all(torch.equal(v, before[k]) for k, v in ttq.state_dict().items())
