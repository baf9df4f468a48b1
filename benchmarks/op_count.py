"""Operations per training step, FP against TTQ (and TWN): what a GPU must launch, counted on any machine.

On a GPU every operation of a step that computes something is at least one kernel launch, and small ones cost
the CPU about as much to launch as the GPU to run.  Where the convolutions are fast (bf16 on an H100), a step
whose operations outrun them waits for the launching CPU instead of the card, so the count of operations is the
cost the ternary quantizer adds that no faster arithmetic removes.

This counts, over one step of ttq_lib.training.loop.train_step (the step `ttq train` runs, built by
benchmarks/train_throughput.py) after warm-up, the ATen operations that reach a kernel: those a
TorchDispatchMode sees (below autograd and the composite operations that only call others), less views and
bare allocations, which launch nothing.  SGD runs with foreach=True, as it does by default on CUDA (on the CPU
its default is a loop over parameters, which would count each Wp and Wn apart).  Operations are split into
full-size ones and those whose outputs are all single numbers (reductions to a scalar, the arithmetic on Wp,
Wn and the threshold): both are launches, but the latter touch little memory.  The count does not depend on
the batch size, so a tiny random batch is used.

``--host-time`` also times, on the CPU, one forward and backward of a single tiny layer (8 channels, 3x3, a 4x4
input): with almost no arithmetic left, what remains is what each ternary layer costs the CPU that launches a
step's kernels (Python, autograd, dispatch), in microseconds, against the same nn.Conv2d.

    python benchmarks/op_count.py                                      # torchvision ResNet-18, cl+bf16, fp/ttq/twn
    python benchmarks/op_count.py --models resnet20,resnet56 --variant eager
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from train_throughput import VARIANTS, make_step

#: Operations that allocate without computing (no kernel launch).
ALLOCATIONS = {"empty", "empty_strided", "empty_like", "detach"}


class OpCounter(TorchDispatchMode):
    """Counts the kernel-level operations run inside it: ``full`` and ``scalar`` (all outputs one number)."""

    def __init__(self):
        super().__init__()
        self.full, self.scalar = collections.Counter(), collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if not func.is_view and name not in ALLOCATIONS:
            tensors = [o for o in (out if isinstance(out, (list, tuple)) else [out]) if isinstance(o, torch.Tensor)]
            small = bool(tensors) and all(o.numel() <= 1 for o in tensors)
            (self.scalar if small else self.full)[name] += 1
        return out


def count_ops(arch: str, method: str, variant: str, image_size: int, classes: int) -> OpCounter:
    """The operations of one training step on the CPU, SGD in its CUDA (foreach) form."""
    step, _ = make_step(arch, method, variant, torch.device("cpu"), batch=2, size=image_size, classes=classes,
                        foreach=True)
    with OpCounter() as counter:
        step()
    return counter


def host_time_per_layer(rounds: int = 15, steps: int = 200) -> dict[str, float]:
    """Median microseconds of one forward + backward of a tiny layer, for nn.Conv2d ("fp") and TernaryConv2d
    ("ttq", "twn"), timed in interleaved rounds."""
    import torch.nn as nn

    from ttq_lib.layers import TernaryConv2d
    torch.manual_seed(0)
    x = torch.randn(1, 8, 4, 4)
    layers = {"fp": nn.Conv2d(8, 8, 3, padding=1, bias=False),
              "ttq": TernaryConv2d(8, 8, 3, padding=1, bias=False, method="ttq"),
              "twn": TernaryConv2d(8, 8, 3, padding=1, bias=False, method="twn")}
    times = {name: [] for name in layers}
    for _ in range(rounds):
        for name, layer in layers.items():
            t0 = time.perf_counter()
            for _ in range(steps):
                layer(x).sum().backward()
            times[name].append((time.perf_counter() - t0) / steps * 1e6)
    return {name: statistics.median(t) for name, t in times.items()}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="torchvision.resnet18", help="comma-separated model names")
    p.add_argument("--methods", default="fp,ttq,twn", help="comma-separated; the first is the reference")
    eager = [v for v, (_, _, mode) in VARIANTS.items() if mode is None]
    p.add_argument("--variant", default="cl+bf16", choices=eager,
                   help="memory format and precision of the step (compiled variants are not counted)")
    p.add_argument("--image-size", type=int, default=None, help="default: 64 for torchvision models, else 32")
    p.add_argument("--top", type=int, default=6, help="list the operations each other method adds most of")
    p.add_argument("--host-time", action="store_true", help="also time a tiny layer's step (see above)")
    args = p.parse_args()
    torch.set_num_threads(1)
    for arch in args.models.split(","):
        size = args.image_size or (64 if arch.startswith("torchvision.") else 32)
        classes = 1000 if arch.startswith("torchvision.") else 10
        methods = args.methods.split(",")
        counts = {m: count_ops(arch, m, args.variant, size, classes) for m in methods}
        ref = counts[methods[0]]
        total_ref = sum(ref.full.values()) + sum(ref.scalar.values())
        print(f"{arch}, {args.variant}, one training step (torch {torch.__version__})")
        print(f"  {'method':8s} {'full-size':>9s} {'scalar':>7s} {'all ops':>8s} {'vs ' + methods[0]:>8s}")
        for m in methods:
            full, scalar = sum(counts[m].full.values()), sum(counts[m].scalar.values())
            print(f"  {m:8s} {full:9d} {scalar:7d} {full + scalar:8d} {(full + scalar) / total_ref:7.2f}x")
        for m in methods[1:]:
            added = (counts[m].full - ref.full) + (counts[m].scalar - ref.scalar)
            print(f"  most added by {m}: " + ", ".join(f"{k} +{v}" for k, v in added.most_common(args.top)))
    if args.host_time:
        us = host_time_per_layer()
        print("host time of one tiny layer's forward + backward (1 thread; median of 15 rounds of 200 steps):")
        for m, t in us.items():
            print(f"  {m:8s} {t:7.1f} us   {t - us['fp']:+7.1f} us against nn.Conv2d")


if __name__ == "__main__":
    main()
