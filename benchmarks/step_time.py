"""Training-step time of a TTQ (and TWN) ResNet against the same full-precision ResNet, in one process.

A step is forward, cross-entropy, backward, SGD update (and, for TTQ, the Wp/Wn clamp), batch 128 by
default.  Models are timed in interleaved rounds so that load from other processes hits all of them
alike; the median over rounds is reported, with the ratios that matter.

    python benchmarks/step_time.py [--model resnet20] [--batch 128] [--rounds 7] [--steps 5] [--threads N]
"""
import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from ttq_lib import build_model, clamp_scales_, ternarize_model
from ttq_lib.training.provenance import machine


def make_step(model, x, y):
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, weight_decay=2e-4)

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        clamp_scales_(model)

    return step


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=5, help="steps per timed round")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--device", default="cpu")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    dev = torch.device(args.device)
    x = torch.randn(args.batch, 3, 32, 32, device=dev)
    y = torch.randint(0, 10, (args.batch,), device=dev)
    models = {"fp": build_model(args.model)}
    for method in ("ttq", "twn"):
        m = build_model(args.model)
        m.load_state_dict(models["fp"].state_dict())
        models[method] = ternarize_model(m, method=method)
    steps = {k: make_step(m.to(dev).train(), x, y) for k, m in models.items()}
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for s in steps.values():  # warm-up: allocator, kernels, thread pools
        s(); s()
    times = {k: [] for k in steps}
    for _ in range(args.rounds):
        for k, s in steps.items():
            sync()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                s()
            sync()
            times[k].append((time.perf_counter() - t0) / args.steps)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"{args.model}, batch {args.batch}, {args.rounds} interleaved rounds of {args.steps} steps; "
          f"torch {torch.__version__}; {machine()}")
    for k, v in med.items():
        print(f"  {k:4s} step {1000 * v:8.1f} ms  (min {1000 * min(times[k]):.1f}, max {1000 * max(times[k]):.1f})")
    print(f"TTQ / FP step-time ratio: {med['ttq'] / med['fp']:.3f}   (target <= 1.05)")
    print(f"TWN / FP step-time ratio: {med['twn'] / med['fp']:.3f}")


if __name__ == "__main__":
    main()
