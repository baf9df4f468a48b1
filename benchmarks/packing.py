"""Benchmark packed ternary models: file sizes, pack/unpack throughput, packed-inference latency.

For each CIFAR ResNet, the pretrained full-precision checkpoint is ternarized with the paper's threshold
(t = 0.05, Sec. 3) and Wp = Wn = mean magnitude of each region (no training: sizes and speed do not
depend on accuracy). Everything is measured side by side in one run; latency rounds interleave the
models so that load from other processes hits all of them alike.

    .venv/bin/python benchmarks/packing.py [--archs resnet20 resnet56] [--threads 1] [--pretrained-dir DIR]  (default: the input resolver)
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from ttq_lib import ternarize_model
from ttq_lib.formats import load_model
from ttq_lib.convert import ternary_like_layers
from ttq_lib.formats import load_packed, save_packed
from ttq_lib.bitpack import SCHEMES, pack_codes, unpack_codes
from ttq_lib.data.inputs import resolve_pretrained
from ttq_lib.formats.size import size_report



def _best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` runs: the least disturbed by other processes on a shared machine."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def file_sizes(fp_model, ternary_model, arch: str, tmp: Path) -> dict:
    fp_path = tmp / f"{arch}.fp32.pt"
    torch.save(fp_model.state_dict(), fp_path)
    sizes = {"fp32 state_dict (torch.save)": (fp_path.stat().st_size, None)}
    for scheme in SCHEMES:
        path = save_packed(ternary_model, tmp / f"{arch}.{scheme}.safetensors", scheme=scheme)
        with open(path, "rb") as f:
            header = 8 + int.from_bytes(f.read(8), "little")  # safetensors: u64 length + JSON header
        sizes[f"packed {scheme}"] = (path.stat().st_size, header)
    return sizes


def throughput(layers, repeats: int) -> dict:
    """M weights/s packing and unpacking the model's own layers, one call per layer as save/load do."""
    codes = [m.ternary_codes() for _, m in layers]
    n = sum(c.numel() for c in codes)
    out = {}
    for scheme in SCHEMES:
        packed = [pack_codes(c, scheme) for c in codes]
        t_pack = _best_of(lambda: [pack_codes(c, scheme) for c in codes], repeats)
        t_unpack = _best_of(lambda: [unpack_codes(p, c.numel(), scheme) for p, c in zip(packed, codes)], repeats)
        out[scheme] = (n / t_pack / 1e6, n / t_unpack / 1e6)
    return out


def bulk_throughput(n: int, repeats: int) -> dict:
    codes = torch.randint(-1, 2, (n,), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    out = {}
    for scheme in SCHEMES:
        packed = pack_codes(codes, scheme)
        assert torch.equal(unpack_codes(packed, n, scheme), codes)
        out[scheme] = (n / _best_of(lambda: pack_codes(codes, scheme), repeats) / 1e6,
                       n / _best_of(lambda: unpack_codes(packed, n, scheme), repeats) / 1e6)
    return out


@torch.inference_mode()
def latency(models: dict, batch: int, rounds: int) -> dict:
    """Median seconds per forward pass; every round times each model once, in turn."""
    x = torch.randn(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for m in models.values():
        m(x)  # warm-up: allocator, kernels choice
    times = {k: [] for k in models}
    for _ in range(rounds):
        for k, m in models.items():
            t0 = time.perf_counter()
            m(x)
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def run(arch: str, ckpt: Path, args, tmp: Path) -> None:
    fp, _ = load_model(ckpt)
    fp.eval()
    torch.manual_seed(0)
    ternary, _ = load_model(ckpt)
    ternarize_model(ternary, t=0.05, scale_init="mean").eval()
    layers = ternary_like_layers(ternary)
    n_tern = sum(m.weight.numel() for _, m in layers)
    print(f"\n## {arch} ({ckpt.name}): {len(layers)} ternary layers, {n_tern:,} ternary weights")

    sizes = file_sizes(fp, ternary, arch, tmp)
    report = size_report(ternary)
    fp32 = sizes["fp32 state_dict (torch.save)"][0]
    print("\nFile sizes (whole model; full-precision first conv, last linear and batch norm included)")
    print(f"{'file':32} {'bytes':>10} {'ratio':>7} {'of which header':>16} {'ratio w/o header':>17}")
    for name, (b, h) in sizes.items():
        extra = f" {h:>16,} {fp32 / (b - h):>16.2f}x" if h else ""
        print(f"{name:32} {b:>10,} {fp32 / b:>6.2f}x{extra}")
    t = report.totals["ternary"]
    print("\nTernary layers alone (codes + Wp, Wn vs their fp32 weights; size_report)")
    print(f"{'format':10} {'bytes':>10} {'ratio':>7}")
    for f in ("fp32", "2bit", "base3", "entropy"):
        print(f"{f:10} {t[f]:>10,} {t['fp32'] / t[f]:>6.2f}x")
    zeros = sum(r["p_zero"] * r["params"] for r in report.rows if r["kind"] == "ternary") / n_tern
    print(f"(share of zero codes {100 * zeros:.1f} %; 'entropy' is the bound for these shares)")

    print(f"\nPack / unpack throughput, M weights/s ({args.threads} thread(s); best of {args.repeats})")
    print(f"{'scheme':8} {'model: pack':>12} {'unpack':>8} {'bulk 8M: pack':>14} {'unpack':>8}")
    model_tp = throughput(layers, args.repeats)
    bulk_tp = bulk_throughput(8_000_000, args.repeats)
    for s in SCHEMES:
        print(f"{s:8} {model_tp[s][0]:>12.1f} {model_tp[s][1]:>8.1f} {bulk_tp[s][0]:>14.1f} {bulk_tp[s][1]:>8.1f}")

    path = tmp / f"{arch}.base3.safetensors"
    variants = {"fp32": fp, "ternary (unpacked)": ternary,
                "packed lazy": load_packed(path, decode="lazy")[0], "packed once": load_packed(path, decode="once")[0]}
    x = torch.randn(8, 3, 32, 32)
    with torch.inference_mode():
        ref = ternary(x)
        diffs = {k: float((variants[k](x) - ref).abs().max()) for k in ("packed lazy", "packed once")}
    print(f"\nmax |logit difference| packed vs unpacked ternary: "
          + ", ".join(f"{k} {v:.1e}" for k, v in diffs.items()))
    print(f"\nLatency per forward pass, base3 file (median of {args.rounds} interleaved rounds)")
    print(f"{'model':20} {'batch 1 ms':>11} {'vs fp32':>8} {'batch 128 ms':>13} {'vs fp32':>8}")
    lat1 = latency(variants, 1, args.rounds)
    lat128 = latency(variants, 128, max(3, args.rounds // 10))
    for k in variants:
        print(f"{k:20} {1e3 * lat1[k]:>11.2f} {lat1[k] / lat1['fp32']:>7.2f}x "
              f"{1e3 * lat128[k]:>13.1f} {lat128[k] / lat128['fp32']:>7.2f}x")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--archs", nargs="+", default=["resnet20", "resnet56"])
    p.add_argument("--pretrained-dir", type=Path, default=None,
                   help="a folder of <arch>-*.th files; default: the published models, from the input resolver "
                        "($TTQ_PRETRAINED_DIR, ../shared, the user cache, else a checked download)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    p.add_argument("--repeats", type=int, default=5, help="repeats for throughput (best is kept)")
    p.add_argument("--rounds", type=int, default=30, help="latency rounds at batch 1 (batch 128: a tenth)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {args.threads} torch thread(s)")
    with tempfile.TemporaryDirectory() as d:
        for arch in args.archs:
            if args.pretrained_dir is None:
                found = resolve_pretrained(arch)
                print(f"{arch}: {found}")
                run(arch, Path(found.value), args, Path(d))
                continue
            files = sorted(args.pretrained_dir.glob(f"{arch}-*.th"))
            if not files:
                print(f"no {arch}-*.th in {args.pretrained_dir}; pass --pretrained-dir", file=sys.stderr)
                return 2
            run(arch, files[0], args, Path(d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
