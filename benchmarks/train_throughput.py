"""Training throughput (images/s) of CIFAR ResNets, FP and TTQ, for each way `ttq train` can run a step.

Variants, each against today's path measured side by side in the same process:

    eager       fp32, NCHW, no compile: the path `ttq train` took before --channels-last/--precision/--compile
    cl          channels_last memory format (--channels-last)
    bf16        bfloat16 autocast of the forward pass (--precision bf16)
    cl+bf16     channels_last and bf16 (the GPU setting of issue 12: compare fp and ttq rows)
    compile     torch.compile of the model (--compile)
    cl+compile  channels_last and compile
    all         channels_last, bf16 and compile together
    all+cg      `all` with mode="reduce-overhead": CUDA graphs replay each step's kernels with one launch, which
                takes the per-operation host cost (what a ternary layer adds most of on a GPU) off the step;
                CUDA only in effect (on a CPU it is `all`), so not in the default list

bf16 pays off only where the hardware computes in it (CUDA tensor cores; CPUs with AVX512-BF16 or AMX): on a
CPU without, PyTorch emulates it and a step is many times slower.

A step is ttq_lib.training.loop.train_step, the function `ttq train` calls per batch: (channels_last copy of
the batch,) forward and cross-entropy under autocast, backward, SGD with momentum and the training's parameter
groups, the Wp/Wn clamp, and the on-device sums of loss and correct answers; on a fixed random batch (the data pipeline is left
out, see benchmarks/data_pipeline.py).  Variants are timed in interleaved rounds, so load from other processes
hits all of them alike; the median over rounds is reported, as images/s and as a ratio to `eager` of the same
model, method and device, and the ratio of the fastest rounds beside it (on a shared machine the least
disturbed rounds are the better estimate; --threads 1 also keeps OpenMP threads from waiting on each other when
another process takes a core).  Compile time (the first two steps of a compiled variant) is reported apart.

    python benchmarks/train_throughput.py                     # CPU (and CUDA when present), all variants
    python benchmarks/train_throughput.py --quick             # TTQ ResNet-20 on CPU, ~2 minutes on 2 cores
    python benchmarks/train_throughput.py --models resnet20 --methods ttq --variants eager,cl --rounds 7
    python benchmarks/train_throughput.py --devices cuda --models torchvision.resnet18 --image-size 224 \
        --classes 1000 --batch 256 --methods fp,ttq --variants cl+bf16     # issue 12: TTQ vs FP on a GPU
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from ttq_lib import build_model, ternarize_model
from ttq_lib.training import TrainConfig, param_groups
from ttq_lib.training.config import uses_cudagraphs
from ttq_lib.training.loop import train_step
from ttq_lib.training.provenance import command_line, git_commit, machine

VARIANTS = {  # name: (channels_last, bf16, torch.compile mode or None)
    "eager": (False, False, None),
    "cl": (True, False, None),
    "bf16": (False, True, None),
    "cl+bf16": (True, True, None),
    "compile": (False, False, "default"),
    "cl+compile": (True, False, "default"),
    "all": (True, True, "default"),
    "all+cg": (True, True, "reduce-overhead"),
}
DEFAULT_VARIANTS = [v for v in VARIANTS if v != "all+cg"]


def make_step(arch: str, method: str, variant: str, device: torch.device, batch: int, size: int = 32,
              classes: int = 10, foreach: bool | None = None):
    """A function that runs one training step, and the seconds its first two calls took (compilation).

    ``foreach`` is SGD's (None: PyTorch's default, the one-kernel-per-group update on CUDA, a loop over
    parameters on the CPU)."""
    channels_last, bf16, mode = VARIANTS[variant]
    torch.manual_seed(0)
    model = build_model(arch, classes)
    if method != "fp":
        ternarize_model(model, method=method)
    model.to(device).train()
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(param_groups(model, TrainConfig(method=method)), lr=0.01, momentum=0.9,
                          foreach=foreach)
    net = torch.compile(model, mode=mode) if mode else model
    graphs = uses_cudagraphs(mode)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, 3, size, size, generator=g).to(device)
    y = torch.randint(0, classes, (batch,), generator=g).to(device)
    sums = [torch.zeros((), dtype=torch.float64, device=device), torch.zeros((), dtype=torch.int64, device=device)]

    def step():  # the training loop's own step, so what is timed is what `ttq train` runs
        train_step(net, model, opt, x, y, sums, bf16, channels_last, graphs)

    t0 = time.perf_counter()
    step(), step()  # warm-up: compilation, allocator, cuDNN / oneDNN kernel choice, thread pools
    sync(device)
    return step, time.perf_counter() - t0


def _first_line(e: Exception) -> str:
    return f"{type(e).__name__}: {(str(e).splitlines() or [''])[0]}"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="resnet20,resnet56",
                   help="comma-separated CIFAR ResNets, or torchvision.<name> (e.g. torchvision.resnet18 with "
                        "--image-size 224 --classes 1000: the ImageNet model)")
    p.add_argument("--image-size", type=int, default=32, help="input images are this many pixels a side")
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--methods", default="fp,ttq", help="comma-separated: fp, ttq, twn")
    p.add_argument("--variants", default=",".join(DEFAULT_VARIANTS),
                   help=f"comma-separated, of {', '.join(VARIANTS)} (default: all but all+cg; eager, the baseline, "
                        "is always added)")
    p.add_argument("--devices", default=None, help="comma-separated (default: cpu, and cuda when present)")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (the median is reported)")
    p.add_argument("--steps", type=int, default=3, help="training steps per variant and round")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--quick", action="store_true",
                   help="TTQ ResNet-20 on the CPU, variants eager, cl, cl+compile, 3 rounds of 2 steps: about 2 "
                        "minutes on 2 cores, most of it compiling (less once Inductor's cache holds the kernels)")
    args = p.parse_args()
    if args.quick:
        args.models, args.methods, args.variants = "resnet20", "ttq", "cl,cl+compile"
        args.devices, args.rounds, args.steps = args.devices or "cpu", 3, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    devices = (args.devices or ("cpu,cuda" if torch.cuda.is_available() else "cpu")).split(",")
    variants = ["eager"] + [v for v in args.variants.split(",") if v and v != "eager"]
    for v in variants:
        if v not in VARIANTS:
            p.error(f"--variants: {v!r} is not one of {', '.join(VARIANTS)}")
    if torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True  # as ttq train does on CUDA

    # the command and commit first, so a saved copy of this output (results/benchmarks/) says what made it
    print(f"command: python benchmarks/{command_line()}\ngit commit: {git_commit()}")
    print(f"batch {args.batch}, {args.rounds} interleaved rounds of {args.steps} steps; torch {torch.__version__}; "
          f"{machine()}")
    for dev_name in devices:
        device = torch.device(dev_name)
        for arch in args.models.split(","):
            for method in args.methods.split(","):
                steps, compile_s, failed = {}, {}, {}
                for v in variants:
                    try:
                        steps[v], compile_s[v] = make_step(arch, method, v, device, args.batch, args.image_size,
                                                           args.classes)
                    except Exception as e:  # noqa: BLE001 - one variant failing must not cost a GPU call the rest
                        failed[v] = _first_line(e)
                times = {v: [] for v in steps}
                for _ in range(args.rounds):
                    for v, step in list(steps.items()):
                        sync(device)
                        t0 = time.perf_counter()
                        try:
                            for _ in range(args.steps):
                                step()
                            sync(device)
                        except Exception as e:  # noqa: BLE001
                            failed[v] = _first_line(e)
                            del steps[v], times[v]
                            continue
                        times[v].append((time.perf_counter() - t0) / args.steps)
                print(f"\n{device.type} {arch} {method}")
                for v, why in failed.items():
                    print(f"  {v:10s} failed: {why}")
                if "eager" not in times:
                    continue
                base, base_min = statistics.median(times["eager"]), min(times["eager"])
                print(f"  {'variant':10s} {'ms/step':>8s} {'images/s':>9s} {'vs eager':>8s} {'(of mins)':>9s}"
                      f"  min-max ms; warm-up s")
                for v in times:
                    med = statistics.median(times[v])
                    print(f"  {v:10s} {1000 * med:8.1f} {args.batch / med:9.0f} {base / med:7.2f}x "
                          f"{base_min / min(times[v]):8.2f}x  {1000 * min(times[v]):.0f}-{1000 * max(times[v]):.0f}; "
                          f"{compile_s[v]:.1f}")


if __name__ == "__main__":
    main()
