"""How many bytes a model takes in each storage format: a per-layer size table.

The paper (Zhu et al., ICLR 2017, Sec. 5) counts 2 bits per ternary weight plus two scalars per layer,
"nearly 16x smaller" than fp32. This report puts that next to base-3 packing (1.6 bits, see
:mod:`ttq_lib.bitpack`) and the entropy bound of each layer's actual code distribution
``H(p_neg, p_zero, p_pos)`` bits per weight; for a zero share p0 with balanced signs that is
``h(p0) + (1 - p0)`` bits (1.5 at p0 = 0.5), below log2(3) = 1.585 only by entropy coding.

Counting rules (the table is in the spirit of larq's model summary):

* ``fp32`` / ``fp16`` / ``int8``: every stored value at that width, no per-tensor scale overhead.
* ``2bit`` / ``base3`` / ``entropy``: a ternary layer's weight at that density plus 8 bytes for Wp, Wn
  (two fp32); its bias and every full-precision layer at fp32.
* ``params`` counts parameters (for a ternary layer the weight and bias, not Wp, Wn); ``buffers`` counts
  floating-point buffers inference needs (batch-norm running mean and variance), which the byte columns
  include. Integer bookkeeping such as ``num_batches_tracked`` is left out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn as nn

from ..bitpack import packed_nbytes
from ..convert import ternary_like_layers
from ..quantizers import code_shares

__all__ = ["FORMATS", "SizeReport", "size_report", "ternary_entropy_bits"]

FORMATS = ("fp32", "fp16", "int8", "2bit", "base3", "entropy")
_WIDTH = {"fp32": 4, "fp16": 2, "int8": 1}
_SCALE_BYTES = 8  # Wp and Wn as two fp32 numbers


def ternary_entropy_bits(p_neg: float, p_zero: float, p_pos: float) -> float:
    """Shannon entropy in bits per weight of a ternary code distribution (0 log 0 = 0)."""
    total = p_neg + p_zero + p_pos
    if not math.isclose(total, 1.0, abs_tol=1e-9) or min(p_neg, p_zero, p_pos) < 0:
        raise ValueError(f"shares must be non-negative and sum to 1, got {p_neg}, {p_zero}, {p_pos}")
    return -sum(p * math.log2(p) for p in (p_neg, p_zero, p_pos) if p > 0)


def _ternary_row(name: str, m: nn.Module) -> dict:
    codes = m.ternary_codes()
    n = codes.numel()
    bias = m.bias.numel() if getattr(m, "bias", None) is not None else 0
    shares = code_shares(codes)
    bits = ternary_entropy_bits(shares["neg"], shares["zero"], shares["pos"])
    extra = _SCALE_BYTES + 4 * bias
    row = {"name": name, "kind": "ternary", "params": n + bias, "buffers": 0}
    row.update({f: (n + bias) * w for f, w in _WIDTH.items()})
    row["2bit"] = packed_nbytes(n, "2bit") + extra
    row["base3"] = packed_nbytes(n, "base3") + extra
    row["entropy"] = math.ceil(n * bits / 8) + extra
    row.update(p_neg=shares["neg"], p_zero=shares["zero"], p_pos=shares["pos"], entropy_bits=bits)
    return row


def _full_row(name: str, m: nn.Module) -> dict | None:
    params = sum(p.numel() for p in m.parameters(recurse=False))
    buffers = sum(b.numel() for b in m.buffers(recurse=False) if b.is_floating_point())
    if params + buffers == 0:
        return None
    values = params + buffers
    row = {"name": name or "(model)", "kind": "full", "params": params, "buffers": buffers}
    row.update({f: values * w for f, w in _WIDTH.items()})
    row.update({f: values * 4 for f in ("2bit", "base3", "entropy")})
    return row


def _sum(rows: list[dict]) -> dict:
    return {k: sum(r[k] for r in rows) for k in ("params", "buffers", *FORMATS)}


@dataclass
class SizeReport:
    """Per-layer sizes in bytes (``rows``), ``totals`` for "ternary", "full" and "model", and ``ratios``."""

    rows: list[dict]
    totals: dict = field(init=False)

    def __post_init__(self):
        self.totals = {
            "ternary": _sum([r for r in self.rows if r["kind"] == "ternary"]),
            "full": _sum([r for r in self.rows if r["kind"] == "full"]),
            "model": _sum(self.rows),
        }

    @property
    def ratios(self) -> dict:
        """fp32 bytes divided by each format's bytes, for the ternary layers alone and the whole model.

        ``None`` where there is nothing to compress (a model without ternary layers).
        """
        out = {}
        for part in ("ternary", "model"):
            t = self.totals[part]
            out[part] = {f: (t["fp32"] / t[f] if t[f] else None) for f in FORMATS}
        return out

    def _table(self) -> tuple[list[str], list[list[str]], int]:
        head = ["layer", "kind", "params", "buffers", *FORMATS, "zeros"]
        body = []
        for r in self.rows:
            zeros = f"{100 * r['p_zero']:.1f}%" if r["kind"] == "ternary" else ""
            body.append([r["name"], r["kind"], *(f"{r[k]:,}" for k in ("params", "buffers", *FORMATS)), zeros])
        n_layers = len(body)
        labels = {"ternary": "total ternary layers", "full": "total full-precision", "model": "total model"}
        for part, label in labels.items():
            t = self.totals[part]
            body.append([label, "", *(f"{t[k]:,}" for k in ("params", "buffers", *FORMATS)), ""])
        for part, label in (("ternary", "ratio vs fp32, ternary"), ("model", "ratio vs fp32, model")):
            ratios = self.ratios[part]
            body.append([label, "", "", "", *(f"{v:.2f}x" if v else "-" for v in ratios.values()), ""])
        return head, body, n_layers

    def to_markdown(self) -> str:
        """The table as GitHub markdown (bytes per format; totals and compression ratios at the end)."""
        head, body, n_layers = self._table()
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(head) - 2)) + "|"]
        for i, cells in enumerate(body):
            if i >= n_layers:
                cells = [f"**{cells[0]}**", *cells[1:]]
            lines.append("| " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def __str__(self) -> str:
        head, body, n_layers = self._table()
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]

        def fmt(cells):
            return "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

        rule = "-" * len(fmt(head))
        lines = ["Model size in bytes per storage format", rule, fmt(head), rule]
        lines += [fmt(c) for c in body[:n_layers]] + [rule] + [fmt(c) for c in body[n_layers:]]
        return "\n".join(lines)

    def plot(self, ax=None):
        """Bar chart of the whole model's bytes per format, split into ternary and full-precision parts."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3.5))
        kib = 1024
        tern = [self.totals["ternary"][f] / kib for f in FORMATS]
        full = [self.totals["full"][f] / kib for f in FORMATS]
        ax.bar(FORMATS, tern, label="ternary layers")
        ax.bar(FORMATS, full, bottom=tern, label="full-precision layers")
        for i, f in enumerate(FORMATS):
            ratio = self.ratios["model"][f]
            if ratio:
                ax.annotate(f"{ratio:.1f}x", (i, tern[i] + full[i]), ha="center", va="bottom", fontsize=8)
        ax.set_ylim(top=1.12 * max(t + f for t, f in zip(tern, full)) or 1)  # room for the labels
        ax.set_ylabel("KiB")
        ax.set_title("Model size per storage format (ratio vs fp32)")
        ax.legend()
        return ax


@torch.no_grad()
def size_report(model: nn.Module) -> SizeReport:
    """Per-layer storage sizes of ``model`` (trainable ternary, packed, or full precision).

    Ternary layers are those with ``ternary_codes()`` and ``scales()`` (``TernaryConv2d``/``TernaryLinear``
    and the packed layers); every other module with its own parameters or floating buffers is a full row.
    """
    ternary = dict(ternary_like_layers(model))
    inside = tuple(f"{n}." for n in ternary if n)
    rows = []
    for name, m in model.named_modules():
        if name in ternary:
            rows.append(_ternary_row(name, m))
        elif not (inside and name.startswith(inside)):
            row = _full_row(name, m)
            if row is not None:
                rows.append(row)
    return SizeReport(rows)
