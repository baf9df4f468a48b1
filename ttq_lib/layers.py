"""Ternary convolution and linear layers: latent full-precision weights plus per-layer scales.

The latent ``weight`` is what the optimizer updates; ``quantized_weight()`` is what the layer computes with.
For TTQ each layer owns two trained scales ``wp`` and ``wn`` (paper Sec. 3); the official code starts them
at 1.0.  ``scale_init="mean"`` starts them instead at the mean magnitude of each region, which keeps a trained
model's activations on their original scale (useful without batch-norm recalibration).

The forward and backward passes read no value back from the GPU (no ``.item()``, no boolean indexing), so a
training step runs without host-device syncs and ``torch.compile(model, fullgraph=True)`` traces a whole
ternary ResNet as one graph.  The checks that :func:`ttq_lib.quantizers.ternarize` makes on every call (finite
weights, Wp, Wn > 0) are made here where weights and scales enter: when a layer is built or converted
(:meth:`TernaryMixin.init_scales_`), when a state dict is loaded, and -- with the debug switch
``ttq_lib.quantizers.set_checks(True)`` or ``TTQ_CHECKS=1`` -- in every forward pass and after every
:func:`clamp_scales_`.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .quantizers import (TTQFunction, TWNFunction, check_scale, checks_enabled, region_means, ternary_codes,
                         twn_scale)
from .thresholds import (TERNARY_METHODS, Rule, check_weight, check_weight_meta,  # noqa: F401 (re-exported)
                         threshold_twn_unchecked, threshold_unchecked)

#: Where Wp, Wn start: 1.0 as in the official code, or each region's mean magnitude.
SCALE_INITS = ("one", "mean")


def _check_scale_init(scale_init: str) -> None:
    if scale_init not in SCALE_INITS:
        raise ValueError(f"scale_init={scale_init!r} is not one of {SCALE_INITS}")


class TernaryMixin:
    """What TernaryConv2d and TernaryLinear share: the quantization rule and its state."""

    def _setup_ternary(self, rule: Rule, scale_init: str) -> None:
        _check_scale_init(scale_init)
        check_weight_meta(self.weight)  # shape and dtype only: the values are checked by init_scales_
        self.method, self.t, self.sparsity = rule.method, rule.t, rule.sparsity
        method = rule.method
        if method == "ttq":
            self.wp = nn.Parameter(torch.ones((), dtype=torch.float32, device=self.weight.device))
            self.wn = nn.Parameter(torch.ones((), dtype=torch.float32, device=self.weight.device))
            self.init_scales_(scale_init)

    @torch.no_grad()
    def init_scales_(self, scale_init: str = "one") -> None:
        """Set Wp, Wn to 1.0 ("one", the official code) or to each region's mean magnitude ("mean").

        Conversion (``ttq_lib.convert``) calls this after copying the weights in, so it is also where a
        NaN / Inf latent weight is refused, once, instead of in every forward pass."""
        _check_scale_init(scale_init)
        check_weight(self.weight)
        if self.method != "ttq":
            return
        wp = wn = 1.0
        if scale_init == "mean":
            wp, wn = region_means(self.weight, self.threshold(), empty=1.0)
        self.wp.fill_(wp)
        self.wn.fill_(wn)

    def threshold(self) -> torch.Tensor:
        """The layer's current threshold delta (a constant for the gradient).

        The rule (t or sparsity) was checked when the layer was built, and the weight is checked where it
        is set, so nothing here reads a value back from the device."""
        if self.method == "twn" and self.sparsity is None:
            return threshold_twn_unchecked(self.weight)
        return threshold_unchecked(self.weight, self.t, self.sparsity)

    def check_values(self) -> None:
        """Raise a ValueError unless the latent weight is finite and Wp, Wn are positive.

        Reads values back from the tensors (a host-device sync), so it runs in the forward pass only with
        the debug switch on (``ttq_lib.quantizers.set_checks(True)`` or ``TTQ_CHECKS=1``)."""
        check_weight(self.weight)
        if self.method == "ttq":
            check_scale(self.wp, "wp")
            check_scale(self.wn, "wn")

    def quantized_weight(self) -> torch.Tensor:
        """The ternary tensor the layer computes with: {+Wp, 0, -Wn} (TTQ, Eq. 6) or {+a, 0, -a} (TWN).

        The same functions as :func:`~ttq_lib.quantizers.ternarize` / ``twn_ternarize`` apply, without their
        per-call checks (see the module docstring): the forward and backward read nothing back."""
        if checks_enabled():
            self.check_values()
        if self.method == "ttq":
            return TTQFunction.apply(self.weight, self.wp, self.wn, self.threshold())
        return TWNFunction.apply(self.weight, self.threshold())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Loading is where a corrupt or diverged checkpoint would enter: check it once here, where the
        # message can name the tensor, since the forward pass no longer checks.
        weight = state_dict.get(prefix + "weight")
        if isinstance(weight, torch.Tensor):
            check_weight(weight, f"{prefix}weight")
        for key in ("wp", "wn") if self.method == "ttq" else ():
            value = state_dict.get(prefix + key)
            if isinstance(value, torch.Tensor):
                check_scale(value, prefix + key)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @torch.no_grad()
    def ternary_codes(self) -> torch.Tensor:
        """Integer codes {-1, 0, +1} (int8), what a packed file stores."""
        return ternary_codes(self.weight, self.threshold())

    @torch.no_grad()
    def scales(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(Wp, Wn) as used at inference; TWN's single alpha is returned twice."""
        if self.method == "ttq":
            return self.wp.detach().clone(), self.wn.detach().clone()
        alpha = twn_scale(self.weight, self.threshold())
        return alpha, alpha.clone()

    def extra_repr(self) -> str:
        rule = f"sparsity={self.sparsity}" if self.sparsity is not None else f"t={self.t}"
        if self.method == "twn" and self.sparsity is None:
            rule = "delta=0.7*mean|w|"
        return super().extra_repr() + f", method={self.method}, {rule}"


class TernaryConv2d(TernaryMixin, nn.Conv2d):
    """``nn.Conv2d`` whose weight is ternarized in every forward pass."""

    def __init__(self, *args, method: str = "ttq", t: float | None = None,
                 sparsity: float | None = None, scale_init: str = "one", rule: Rule | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_ternary(rule or Rule(method, t, sparsity), scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.quantized_weight(), self.bias)


class TernaryLinear(TernaryMixin, nn.Linear):
    """``nn.Linear`` whose weight is ternarized in every forward pass."""

    def __init__(self, *args, method: str = "ttq", t: float | None = None,
                 sparsity: float | None = None, scale_init: str = "one", rule: Rule | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._setup_ternary(rule or Rule(method, t, sparsity), scale_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.quantized_weight(), self.bias)


@torch.no_grad()
def clamp_scales_(model: nn.Module, eps: float = 1e-4, check: bool | None = None) -> None:
    """Keep every Wp, Wn >= eps after an optimizer step.

    Wp and Wn can be driven negative by a large step (reported on the authors' repository); a negative
    scale would flip the sign of a whole region, so training clamps them back to a small positive value.
    The clamp reads nothing back (one foreach kernel for all scales).  ``check`` (default: the debug switch,
    ``ttq_lib.quantizers.set_checks`` / ``TTQ_CHECKS=1``) then also checks every ternary layer: a NaN scale or
    a NaN / Inf latent weight raises a ValueError here, after the step that produced it, at one sync per layer.
    """
    layers = [m for m in model.modules() if isinstance(m, TernaryMixin)]
    scales = [s for m in layers if m.method == "ttq" for s in (m.wp, m.wn)]
    if scales:
        torch._foreach_clamp_min_(scales, eps)  # the same values as clamp_(min=eps) on each
    if checks_enabled() if check is None else check:
        for m in layers:
            m.check_values()
