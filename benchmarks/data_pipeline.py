"""Benchmark: our tensor pipeline (ttq_lib.data.Batches) against a torchvision DataLoader.

Both feed the same training step -- ResNet-20 forward + backward + SGD step, batch 128 -- and are
measured side by side in one run: a fixed number of timed steps per configuration (default 20),
in short blocks that alternate between the configurations, each after a warm-up; plus the
pipeline alone (no model).  The DataLoader baseline is what a torchvision tutorial would write:
a CIFAR10-style dataset of in-memory uint8 arrays turned into PIL images per item, with
RandomCrop(32, padding=4), RandomHorizontalFlip, ToTensor and Normalize, num_workers 0 and 2.

    python benchmarks/data_pipeline.py --data /work/shared/data/cifar10-jpeg.tar.gz
    python benchmarks/data_pipeline.py --device cuda --workers 0,2,8

Data: --data, else what the input resolver finds ($TTQ_DATA, ../shared, the user cache, else a download);
``--data synthetic:8000`` times the same shapes without CIFAR-10 (same speeds).
"""
from __future__ import annotations

import argparse
import copy
import os
import platform
import statistics
import time

import torch
import torch.nn.functional as F

from ttq_lib.data import Batches, load_cifar10
from ttq_lib.models import IMAGENET_MEAN, IMAGENET_STD, resnet20


class PilCifar(torch.utils.data.Dataset):
    """Like torchvision.datasets.CIFAR10: uint8 HWC arrays in memory, a PIL image per item."""

    def __init__(self, x_uint8: torch.Tensor, y: torch.Tensor, transform):
        self.data = x_uint8.permute(0, 2, 3, 1).contiguous().numpy()
        self.targets = y.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.transform(Image.fromarray(self.data[i])), self.targets[i]


def dataloader_feed(x, y, batch_size: int, workers: int):
    from torchvision import transforms as T

    tf = T.Compose([
        T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])
    loader = torch.utils.data.DataLoader(
        PilCifar(x, y, tf), batch_size=batch_size, shuffle=True, num_workers=workers,
        drop_last=True, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(),
    )
    while True:
        yield from loader


def ours_feed(x, y, batch_size: int, device):
    b = Batches(x, y, batch_size=batch_size, shuffle=True, augment=True, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                seed=0, device=device, drop_last=True)
    epoch = 0
    while True:
        b.set_epoch(epoch)
        yield from b
        epoch += 1


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(step, n_warmup: int, n_steps: int, device) -> float:
    """Seconds for n_steps calls of step() after n_warmup untimed ones."""
    for _ in range(n_warmup):
        step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(n_steps):
        step()
    sync(device)
    return time.perf_counter() - t0


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="CIFAR-10 source for load_cifar10 (default: the input resolver)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--steps", type=int, default=20, help="timed training steps per configuration, in all")
    p.add_argument("--rounds", type=int, default=5,
                   help="split the timed steps into this many blocks, alternating the configurations' order")
    p.add_argument("--warmup", type=int, default=2, help="untimed training steps before each block")
    p.add_argument("--pipe-batches", type=int, default=40, help="timed batches for the pipeline alone")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--workers", default="0,2", help="DataLoader num_workers values, comma-separated")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    per_block = max(1, args.steps // args.rounds)

    t0 = time.perf_counter()
    data = load_cifar10(args.data)
    print(f"data: {data.name}, {data.source} ({data.origin}; {len(data.train_y)} train images), loaded in "
          f"{time.perf_counter() - t0:.1f} s")
    print(f"device: {device}{' (' + torch.cuda.get_device_name(device) + ')' if device.type == 'cuda' else ''}, "
          f"torch {torch.__version__}, {torch.get_num_threads()} torch threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    print(f"batch {args.batch_size}; per configuration {args.rounds} blocks of {args.warmup} warm-up + "
          f"{per_block} timed training steps, and {args.rounds} x {args.pipe_batches} timed batches without a model\n")

    x, y = data.train_x, data.train_y
    feeds = {"ours (Batches, augment on " + device.type + ")": lambda: ours_feed(x, y, args.batch_size, device)}
    for w in [int(v) for v in args.workers.split(",") if v.strip()]:
        feeds[f"DataLoader PIL, num_workers={w}"] = lambda w=w: dataloader_feed(x, y, args.batch_size, w)

    torch.manual_seed(0)
    init = resnet20().to(device)
    models = {name: copy.deepcopy(init).train() for name in feeds}
    opts = {name: torch.optim.SGD(models[name].parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
            for name in feeds}
    results: dict[str, dict[str, list[float]]] = {name: {"pipe": [], "train": []} for name in feeds}
    # Short blocks in alternating order: on a shared machine the load drifts, and this spreads the
    # drift evenly over the configurations instead of handing it to whichever ran last.
    for r in range(args.rounds):
        names = list(feeds) if r % 2 == 0 else list(reversed(feeds))
        for name in names:
            it = feeds[name]()  # fresh: DataLoader workers run only during their own block
            model, opt = models[name], opts[name]

            def fetch():
                xb, yb = next(it)
                return xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)

            def train_step():
                xb, yb = fetch()
                loss = F.cross_entropy(model(xb), yb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            # Warm-up past the batches that DataLoader workers prefetch while starting.
            secs = timed(fetch, 6, args.pipe_batches, device)
            results[name]["pipe"].append(args.pipe_batches * args.batch_size / secs)
            secs = timed(train_step, args.warmup, per_block, device)
            results[name]["train"].append(per_block * args.batch_size / secs)
            del it  # stops DataLoader workers before the next configuration runs

    med = {n: {k: statistics.median(v) for k, v in d.items()} for n, d in results.items()}
    ours = next(iter(med))
    width = max(len(n) for n in med)

    def cell(values: list[float]) -> str:
        # Median over blocks, and the range: how much a busy machine moved the numbers.
        text = f"{statistics.median(values):,.0f}"
        return text + (f" ({min(values):,.0f}-{max(values):,.0f})" if len(values) > 1 else "")

    print(f"{'feeder':<{width}}  {'pipeline alone img/s':>26}  {'ResNet-20 train step img/s':>27}")
    for n, d in results.items():
        print(f"{n:<{width}}  {cell(d['pipe']):>26}  {cell(d['train']):>27}")
    print()
    for n, m in med.items():
        if n == ours:
            continue
        print(f"ratio ours / [{n}]: train step {med[ours]['train'] / m['train']:.2f}x, "
              f"pipeline alone {med[ours]['pipe'] / m['pipe']:.1f}x")


if __name__ == "__main__":
    main()
