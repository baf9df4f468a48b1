"""Operations per training step, FP against TTQ (and TWN): what a GPU must launch, counted on any machine.

On a GPU every ATen operation of a step is at least one kernel launch, and small ones cost the CPU about as much
to launch as the GPU to run.  Where the convolutions are fast (bf16 on an H100), a step whose operations outrun
them waits for the launching CPU instead of the card, so the count of operations is the cost the ternary
quantizer adds that no faster arithmetic removes.  This counts them with torch.profiler over one step of
ttq_lib.training.loop.train_step (the step `ttq train` runs; see benchmarks/train_throughput.py, whose step
builder it uses), after warm-up, on a tiny random batch: the count does not depend on the batch size.

    python benchmarks/op_count.py                                      # torchvision ResNet-18, cl+bf16, fp/ttq/twn
    python benchmarks/op_count.py --models resnet20,resnet56 --variant eager
"""
from __future__ import annotations

import argparse
import collections

import torch
from torch.profiler import ProfilerActivity, profile

from train_throughput import VARIANTS, make_step


def count_ops(arch: str, method: str, variant: str, image_size: int, classes: int) -> collections.Counter:
    """ATen operations (name -> count) of one training step on the CPU."""
    step, _ = make_step(arch, method, variant, torch.device("cpu"), batch=2, size=image_size, classes=classes)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    return collections.Counter({e.key: e.count for e in prof.key_averages() if e.key.startswith("aten::")})


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="torchvision.resnet18", help="comma-separated model names")
    p.add_argument("--methods", default="fp,ttq,twn", help="comma-separated; the first is the reference")
    p.add_argument("--variant", default="cl+bf16", choices=[v for v in VARIANTS if "compile" not in v and v != "all"],
                   help="memory format and precision of the step (compiled variants are not counted)")
    p.add_argument("--image-size", type=int, default=None, help="default: 64 for torchvision models, else 32")
    p.add_argument("--top", type=int, default=5, help="list the operations the first other method adds most of")
    args = p.parse_args()
    torch.set_num_threads(1)
    for arch in args.models.split(","):
        size = args.image_size or (64 if arch.startswith("torchvision.") else 32)
        classes = 1000 if arch.startswith("torchvision.") else 10
        methods = args.methods.split(",")
        counts = {m: count_ops(arch, m, args.variant, size, classes) for m in methods}
        ref = sum(counts[methods[0]].values())
        print(f"{arch}, {args.variant}, one training step (torch {torch.__version__})")
        print(f"  {'method':8s} {'ATen ops':>9s} {'vs ' + methods[0]:>8s}")
        for m in methods:
            n = sum(counts[m].values())
            print(f"  {m:8s} {n:9d} {n / ref:7.2f}x")
        if len(methods) > 1:
            added = counts[methods[1]] - counts[methods[0]]
            print(f"  most added by {methods[1]}: " + ", ".join(f"{k} +{v}" for k, v in added.most_common(args.top)))


if __name__ == "__main__":
    main()
