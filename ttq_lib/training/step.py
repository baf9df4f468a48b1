"""One training step, and reading its running sums back (where a diverged run stops)."""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..layers import clamp_scales_


def train_step(net: nn.Module, model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor,
               sums: list[torch.Tensor], bf16: bool = False, channels_last: bool = False,
               cudagraphs: bool = False) -> int:
    """One training step, the only one there is (``train`` and benchmarks/train_throughput.py both call it).

    Forward of ``net`` (the model, or DDP / torch.compile around it) and cross-entropy under bf16 autocast when
    asked, backward (DDP averages the gradients of all processes here), the optimizer step, then the clamp that
    keeps TTQ's Wp, Wn positive (on ``model``, the module that owns them).  The loss (times the batch size)
    and the count of correct answers are added to ``sums`` [loss_sum, correct] on the device: nothing is read
    back.  ``cudagraphs``: ``net`` was compiled with mode "reduce-overhead"; each step is marked as a new one, so
    that its graphs may reuse the memory of the last step's outputs (the loop keeps none of them).  Returns the
    batch size."""
    if cudagraphs:
        torch.compiler.cudagraph_mark_step_begin()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
        logits = net(x)
        loss = F.cross_entropy(logits, y)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    clamp_scales_(model)
    sums[0] += loss.detach().to(sums[0].dtype) * len(y)
    sums[1] += (logits.argmax(1) == y).sum()
    return len(y)


def read_loss(loss_sum: torch.Tensor, seen: int, epoch: int, step: int) -> float:
    """The mean training loss so far, read back from the device (a sync); a diverged run stops here.

    The weights of the epoch's steps so far are not saved: the run folder keeps the last committed epoch."""
    mean = float(loss_sum) / seen
    if not math.isfinite(mean):
        kept = f"its epochs 1-{epoch}" if epoch else "no epoch yet"
        raise ValueError(f"training diverged: the training loss is {mean} by step {step + 1} of epoch {epoch + 1}, "
                         f"which is not saved (the run folder keeps {kept}); lower --lr (or --scale-lr) and "
                         "start again, or set TTQ_CHECKS=1 to stop at the first layer whose weights or scales go bad")
    return mean
