"""Data-parallel training throughput: images/s of 1 and of N processes (torch.distributed, gloo on CPUs,
NCCL on GPUs) on the same global batch, as `torchrun ... ttq train --dataset imagenet` runs its steps.

Each process runs ttq_lib.training.loop.train_step (forward, loss, backward with DDP's gradient all-reduce,
optimizer step, Wp/Wn clamp) on its share of a fixed random global batch (the data pipeline is left out, see
benchmarks/data_pipeline.py), for an ImageNet model at a chosen image size.  The processes are started here
(torch.multiprocessing, the same variables torchrun sets) one world size after the other; each reports the
median time of a step over rounds, after warm-up steps, and images/s = global batch / that time.

On a 2-core CPU, 2 processes of 1 thread each compete with 1 process of 2 threads: the gain (or loss) is what
the all-reduce of 11 M gradients costs against what splitting the batch saves.  On GPUs, N processes use N GPUs.

    python benchmarks/distributed_throughput.py                                  # ResNet-18 TTQ, 1 and 2 CPU processes
    python benchmarks/distributed_throughput.py --worlds 1,2 --image-size 64 --batch 32 --methods fp,ttq
    python benchmarks/distributed_throughput.py --device cuda --worlds 1,8 --image-size 224 --batch 256
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import tempfile
import time

import torch
import torch.multiprocessing as mp


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, args, path: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from ttq_lib.convert import ternarize_model
    from ttq_lib.models.imagenet import build_imagenet_model
    from ttq_lib.training.config import TrainConfig
    from ttq_lib.training.distributed import DistInfo, barrier, setup, teardown, wrap
    from ttq_lib.training.loop import make_optimizer, train_step

    # the CPU's threads are shared among the processes, as torchrun's OMP_NUM_THREADS=1 and --threads would
    torch.set_num_threads(max(1, args.threads // world))
    info = setup(args.device) if world > 1 else DistInfo(0, 1, 0, torch.device(args.device))
    results = {}
    try:
        for method in args.methods.split(","):
            torch.manual_seed(0)
            model = build_imagenet_model(args.model, 1000)
            if method != "fp":
                ternarize_model(model, method=method)
            cl = args.channels_last
            model.to(info.device)
            if cl:
                model.to(memory_format=torch.channels_last)
            opt = make_optimizer(model, TrainConfig(dataset="imagenet", model=args.model, method=method))
            net = wrap(model, info)
            per = args.batch // world
            g = torch.Generator().manual_seed(rank)
            x = torch.randn(per, 3, args.image_size, args.image_size, generator=g).to(info.device)
            y = torch.randint(0, 1000, (per,), generator=g).to(info.device)
            sums = [torch.zeros((), dtype=torch.float64, device=info.device),
                    torch.zeros((), dtype=torch.int64, device=info.device)]
            times = []
            for i in range(args.warmup + args.steps):
                barrier(info)
                if info.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                train_step(net, model, opt, x, y, sums, args.precision == "bf16", cl)
                if info.device.type == "cuda":
                    torch.cuda.synchronize()
                barrier(info)
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
            results[method] = times
        if rank == 0:
            torch.save(results, path)
    finally:
        teardown()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet18", choices=["resnet18", "alexnet"])
    p.add_argument("--methods", default="ttq", help="comma-separated: fp, ttq, twn")
    p.add_argument("--worlds", default="1,2", help="process counts to compare")
    p.add_argument("--batch", type=int, default=16, help="the global batch (split among the processes)")
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="CPU threads in all, shared by the processes")
    p.add_argument("--device", default="cpu", help="cpu (gloo) or cuda (NCCL, one GPU per process)")
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    p.add_argument("--channels-last", action="store_true")
    args = p.parse_args()
    print(f"{args.model}, global batch {args.batch}, {args.image_size} px, {args.device}, {args.precision}"
          f"{', channels_last' if args.channels_last else ''}; {args.threads} CPU threads in all; torch "
          f"{torch.__version__}")
    print(f"{'method':6s} {'procs':>5s} {'ms/step':>9s} {'images/s':>9s}  (min-max ms)")
    for world in (int(w) for w in args.worlds.split(",")):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "times.pt")
            mp.start_processes(_worker, args=(world, _port(), args, path), nprocs=world, start_method="spawn")
            results = torch.load(path, weights_only=True)
        for method, times in results.items():
            med = statistics.median(times)
            print(f"{method:6s} {world:5d} {1000 * med:9.1f} {args.batch / med:9.1f}  "
                  f"({1000 * min(times):.0f}-{1000 * max(times):.0f})")


if __name__ == "__main__":
    main()
