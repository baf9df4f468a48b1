"""The ``ttq`` command line: train, evaluate, pack and inspect ternary CIFAR ResNets."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

DESCRIPTION = """\
Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017) on CIFAR-10.

Every quantized layer keeps latent full-precision weights w and learns two scales Wp, Wn:
weights above t*max|w| become +Wp, below -t*max|w| become -Wn, the rest 0.

  ttq train --start-from ../shared/pretrained/resnet20-12fca82f.th          fine-tune TTQ
  ttq eval results/.../last.safetensors --data cifar10-jpeg.tar.gz         test accuracy
  ttq pack results/.../last.safetensors -o model.ttq.safetensors            2-bit / base-3 file
  ttq size results/.../last.safetensors                                     per-layer size table
  ttq demo                                                                  ternarize a pretrained model
"""

DATA_HELP = ("CIFAR-10 source: 'download' (torchvision, into data/), a cifar-10-batches-py folder, an "
             "image-folder tree or its .tar.gz (train/<class>/..., test/<class>/...), or 'synthetic'. "
             "Default: $TTQ_DATA, else download")


class _DeprecatedInit(argparse.Action):
    """``--init`` was the old name of ``--start-from``; it still works, with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("ttq train: note: --init is deprecated and will be removed; use --start-from (same meaning)",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_train(sub) -> None:
    from .layers import SCALE_INITS
    from .models import DEPTHS
    from .models.imagenet import IMAGENET_MODELS
    from .training.config import METHODS, PRECISIONS, SCHEDULES, TrainConfig
    from .training.imagenet_recipe import add_imagenet_arguments

    d = TrainConfig()
    p = sub.add_parser("train", help="train or fine-tune a FP / TWN / TTQ CIFAR ResNet",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a CIFAR ResNet. Defaults follow the official TTQ CIFAR-10 recipe "
                                   "(SGD momentum 0.9, lr 0.1 /10 at epochs 82, 123, 150, batch 128, weight "
                                   "decay 2e-4, t = 0.05). The paper fine-tunes TTQ from a trained "
                                   "full-precision model: pass it with --start-from.")
    p.add_argument("--model", default=d.model, choices=[*DEPTHS, *IMAGENET_MODELS],
                   help="a CIFAR ResNet; alexnet and resnet18 (torchvision's) need --dataset imagenet")
    p.add_argument("--method", default=d.method, choices=list(METHODS),
                   help="fp: full precision; twn: Ternary Weight Networks baseline; ttq: trained ternary")
    p.add_argument("--start-from", metavar="CHECKPOINT", default=None,
                   help="checkpoint to fine-tune from (../shared/pretrained/*.th or one of ours); omit to train "
                        "from scratch")
    p.add_argument("--init", dest="start_from", action=_DeprecatedInit, help="deprecated name of --start-from")
    p.add_argument("--data", default=None, help=DATA_HELP)
    rule = p.add_mutually_exclusive_group()
    # "%(default).0s" prints nothing: it only stops the formatter from appending "(default: None)".
    rule.add_argument("--t", type=float, default=d.t,
                      help="TTQ's threshold factor: delta = t * max|w|; omitted, the paper's 0.05. TWN has no t "
                           "(its threshold is 0.7 * mean|w|)%(default).0s")
    rule.add_argument("--sparsity", type=float, default=None,
                      help="instead of t: fixed share r of zero weights per layer (paper sweeps 0..0.5)")
    p.add_argument("--scale-init", default=d.scale_init, choices=list(SCALE_INITS),
                   help="initial Wp, Wn: 1.0 as in the official code, or each region's mean |w|")
    p.add_argument("--quantize-first", action="store_true", help="also ternarize the first conv")
    p.add_argument("--quantize-last", action="store_true", help="also ternarize the last linear layer")
    # Options a recipe sets default to None here: CIFAR-10's value, or the ImageNet model's recipe (see
    # IMAGENET_RECIPES); "%(default).0s" keeps the formatter from printing "(default: None)".
    recipe = " (--dataset imagenet: the model's recipe, see README)%(default).0s"
    p.add_argument("--epochs", type=int, default=None, help=f"default {d.epochs}{recipe}")
    p.add_argument("--batch-size", type=int, default=None,
                   help=f"the global batch, split among torchrun's processes; default {d.batch_size}{recipe}")
    p.add_argument("--lr", type=float, default=None, help=f"default {d.lr}{recipe}")
    p.add_argument("--momentum", type=float, default=None, help=f"default {d.momentum}{recipe}")
    p.add_argument("--weight-decay", type=float, default=None, help=f"default {d.weight_decay}{recipe}")
    p.add_argument("--decay-scales", action="store_true",
                   help="apply weight decay to Wp, Wn too (the official script did, by its name filter)")
    p.add_argument("--schedule", default=d.schedule, choices=list(SCHEDULES))
    p.add_argument("--milestones", default=None,
                   help=f"epochs where the step schedule multiplies lr by --lr-decay; default "
                        f"{','.join(map(str, d.milestones))}{recipe}")
    p.add_argument("--lr-decay", type=float, default=None, help=f"default {d.lr_decay}{recipe}")
    add_imagenet_arguments(p.add_argument_group("ImageNet-style data and several processes (torchrun)"), recipe)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default=d.device, help="auto, cpu, cuda, cuda:1, ...")
    p.add_argument("--train-subset", type=int, default=None, help="train on only this many images")
    p.add_argument("--test-subset", type=int, default=None, help="test on only this many images")
    p.add_argument("--holdout", type=int, metavar="N", default=None,
                   help="hold out N training images (a stratified pick, the same for every run and seed), train "
                        "on the rest and evaluate on them, never on the test split: for choosing learning rates%(default).0s")
    p.add_argument("--scale-lr", type=float, metavar="LR", default=None,
                   help="learning rate of TTQ's Wp, Wn (their own optimizer group, on the same schedule); "
                        "omitted, --lr; 0 freezes them%(default).0s")
    p.add_argument("--precision", default=d.precision, choices=list(PRECISIONS),
                   help="bf16: run the forward pass under bfloat16 autocast (weights and optimizer stay fp32)")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (the first steps compile)")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels_last (NHWC) memory format; omitted, on for CPU (measured faster), off for "
                        "CUDA%(default).0s")
    p.add_argument("--log-every", type=int, metavar="N", default=d.log_every,
                   help="read the loss back for the progress bar every N steps (each read waits for the device)")
    p.add_argument("--out", default=None, help="run directory (default runs/<model>-<method>-<time>)")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue a stopped run from its last committed epoch, from any directory (its other "
                        "options come from RUN_DIR/config.json); a finished run is left as it is")
    p.add_argument("--overwrite", action="store_true",
                   help="start again in an --out folder that already holds a run, deleting its run files "
                        "(without it such a folder is refused)")
    p.set_defaults(func=cmd_train)


def cmd_train(args) -> int:
    from .training import TrainConfig, train
    from .training.config import load_config, matches_saved_run
    from .training.distributed import teardown

    restarted = False  # by torchrun, after a process died
    if args.resume:
        if args.out is not None and Path(args.out).resolve() != Path(args.resume).resolve():
            raise ValueError(f"--resume {args.resume} continues the run in that folder; drop --out {args.out}")
        cfg = load_config(args.resume)
    else:
        if args.out is None and int(os.environ.get("WORLD_SIZE", 1)) > 1:
            raise ValueError("several processes need one run folder: give --out DIR (the default name holds the "
                             "time, which the processes would each read for themselves)")
        out = args.out or f"runs/{args.model}-{args.method}-{time.strftime('%Y%m%d-%H%M%S')}"
        cfg = TrainConfig(model=args.model, method=args.method, start_from=args.start_from, data=args.data, t=args.t,
                          sparsity=args.sparsity, scale_init=args.scale_init, keep_first=not args.quantize_first,
                          keep_last=not args.quantize_last, **_recipe(args), decay_scales=args.decay_scales,
                          schedule=args.schedule, dataset=args.dataset, image_size=args.image_size,
                          eval_resize=args.eval_resize, workers=args.workers, decode=args.decode,
                          sync_bn=args.sync_bn, seed=args.seed, threads=args.threads, device=args.device,
                          train_subset=args.train_subset, test_subset=args.test_subset, holdout=args.holdout,
                          scale_lr=args.scale_lr, precision=args.precision, compile=args.compile,
                          channels_last=args.channels_last, log_every=args.log_every, out=out)
        # torchrun --max-restarts N starts the same command again after a process died: continue the run it
        # began, and only that one (the folder's config.json must be this command's).
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0 and matches_saved_run(cfg):
            restarted = True
    try:
        metrics = train(cfg, resume=bool(args.resume) or restarted, overwrite=args.overwrite and not restarted)
    finally:
        teardown()  # leave torchrun's process group (a no-op for one process)
    if metrics:  # rank 0 of several processes, or the only one
        print(json.dumps(metrics, indent=2))
    return 0


def _recipe(args) -> dict:
    from .training.imagenet_recipe import RECIPE_FIELDS, recipe_values

    given = {k: getattr(args, k) for k in RECIPE_FIELDS if getattr(args, k) is not None}
    if "milestones" in given:
        given["milestones"] = [int(m) for m in given["milestones"].split(",") if m.strip()]
    return recipe_values(args.dataset, args.model, given)


def _add_eval(sub) -> None:
    p = sub.add_parser("eval", help="test accuracy of a checkpoint or packed file",
                       description="Evaluate a checkpoint (ours, a packed file, or ../shared/pretrained/*.th) "
                                   "on the CIFAR-10 test split, normalising inputs as the checkpoint was trained.")
    p.add_argument("path", help="checkpoint: .safetensors (ours / packed) or .th / .pt")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--test-subset", type=int, default=None, help="only N test images (a stratified pick)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="end with one JSON line holding 'accuracy' (percent)")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from .data import load_cifar10
    from .formats import load_model
    from .training import accuracy, resolve_device

    device = resolve_device(args.device)
    model, meta = load_model(args.path, map_location=device)
    data = load_cifar10(args.data)
    if args.test_subset:  # a stratified pick: the test split may be stored class by class
        data = data.subset(None, args.test_subset)
    x, y = data.test_x, data.test_y
    acc = accuracy(model, x, y, meta["mean"], meta["std"], device=device, progress=True)
    result = {"path": str(args.path), "arch": meta["arch"], "method": meta["method"], "accuracy": acc,
              "images": len(y), "data": str(data.source)}
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{args.path}: {meta['arch']} ({meta['method']}) test accuracy {acc:.2f}% on {len(y)} images")
    return 0


def _add_pack(sub) -> None:
    from .bitpack import SCHEMES

    p = sub.add_parser("pack", help="write a packed ternary model file (2-bit or base-3 codes)",
                       description="Pack a ternary checkpoint: each ternary layer's weights become codes in "
                                   "{-1, 0, +1} (2 bits, or 5 per byte in base 3 = 1.6 bits) plus Wp and Wn; "
                                   "other tensors are kept as they are. `ttq eval FILE` evaluates the result.")
    p.add_argument("path", help="a TTQ or TWN checkpoint (.safetensors)")
    p.add_argument("-o", "--output", required=True, help="packed file to write (.safetensors); never the input")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists (it is refused otherwise)")
    p.add_argument("--scheme", default="base3", choices=list(SCHEMES),
                   help="base3: 5 codes per byte (1.6 bits); 2bit: 4 codes per byte, the paper's count")
    p.set_defaults(func=cmd_pack)


def cmd_pack(args) -> int:
    from .formats import pack_checkpoint

    out = pack_checkpoint(args.path, args.output, scheme=args.scheme, overwrite=args.force)
    src, dst = Path(args.path).stat().st_size, Path(args.output).stat().st_size
    print(f"wrote {out} ({dst:,} bytes; {args.path}: {src:,} bytes, {src / dst:.1f}x smaller)")
    return 0


def _add_size(sub) -> None:
    p = sub.add_parser("size", help="per-layer size table: fp32, fp16, int8, 2-bit, base-3, entropy bound")
    p.add_argument("path", help="a checkpoint or packed file")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.set_defaults(func=cmd_size)


def cmd_size(args) -> int:
    from .formats import load_model, size_report

    model, _ = load_model(args.path)
    report = size_report(model)
    print(report.to_markdown() if args.markdown else report)
    return 0


def _add_demo(sub) -> None:
    p = sub.add_parser("demo", help="ternarize a pretrained ResNet and watch batch-norm recalibration fix it",
                       description="Load a full-precision CIFAR ResNet, ternarize it with TTQ (no training), "
                                   "and evaluate: before, right after, and after re-estimating batch-norm "
                                   "statistics on training images.")
    p.add_argument("--checkpoint", default="../shared/pretrained/resnet20-12fca82f.th")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--t", type=float, default=0.05)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from .convert import ternarize_model
    from .data import Batches, load_cifar10
    from .formats import load_model
    from .training import accuracy, recalibrate_bn

    model, meta = load_model(args.checkpoint)
    data = load_cifar10(args.data)
    # stratified picks (the test split may be stored class by class), never more than the split holds
    data = data.subset(min(2048, len(data.train_y)), min(args.test_subset, len(data.test_y)))
    x, y = data.test_x, data.test_y
    mean, std = meta["mean"], meta["std"]
    rows = [("full precision", accuracy(model, x, y, mean, std))]
    for method, scale_init in (("ttq", "one"), ("ttq", "mean"), ("twn", "one")):
        m, _ = load_model(args.checkpoint)
        ternarize_model(m, method=method, t=args.t if method == "ttq" else None, scale_init=scale_init)
        before = accuracy(m, x, y, mean, std)
        recalibrate_bn(m, Batches(data.train_x, data.train_y, batch_size=256, mean=mean, std=std), 2048)
        rows.append((f"{method} (Wp, Wn init {scale_init})" if method == "ttq" else method, before,
                     accuracy(m, x, y, mean, std)))
    print(f"{meta['arch']} on {len(y)} test images of {data.source}")
    print(f"{'model':28s} {'no training':>12s} {'BN recalibrated':>16s}")
    for r in rows:
        print(f"{r[0]:28s} {r[1]:11.2f}% " + (f"{r[2]:15.2f}%" if len(r) > 2 else ""))
    return 0


def _add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="run a reproduction plan (depths x methods x seeds), resumably",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Run every unfinished run of a plan file (reproduce/cifar10.toml is the project's): "
                                   "results/<plan>/<run>/ per run, N trainings at once, stopping by itself before "
                                   "--budget-min ends with every run checkpointed. Call it again, on this or "
                                   "another machine, to continue where it stopped. Ends with one line per run.")
    p.add_argument("plan", help="the plan file (TOML): recipes, models, seeds")
    p.add_argument("--jobs", type=int, default=1, help="trainings at once (CPU threads are split between them; "
                                                       "on a GPU they share the card)")
    p.add_argument("--budget-min", type=float, default=None,
                   help="stop after this many minutes (less a safety margin), every run checkpointed")
    p.add_argument("--only", nargs="+", metavar="PATTERN", default=None,
                   help="only runs whose names match (e.g. 'resnet20-*'), plus the runs they start from")
    p.add_argument("--results", default="results", help="where results/<plan>/ lives")
    p.add_argument("--data", default=None, help="override the plan's data source (" + DATA_HELP + ")")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    p.add_argument("--status", action="store_true", help="print each run's state and stop")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="instead of running, pack results/<plan>/ into DIR as a few checked files (parts of at most "
                        "15 MiB and a manifest): how a GPU call's results travel home (scripts/device_reproduce.sh)")
    p.add_argument("--import", dest="import_dir", metavar="DIR", default=None,
                   help="instead of running, merge an --export from DIR into results/<plan>/: runs finished here "
                        "are kept, new runs added, unfinished ones replaced where the incoming copy is further")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from .reproduction.plan import load_plan
    from .reproduction.runner import Runner

    plan = load_plan(args.plan, data=args.data)
    if args.export or args.import_dir:
        from .reproduction.transfer import export_plan, import_plan

        if args.export and args.import_dir:
            raise ValueError("--export and --import go in opposite directions: give one of them")
        if args.export:
            for path in export_plan(Path(args.results) / plan.name, args.export):
                print(f"{path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
        else:
            print("\n".join(import_plan(args.import_dir, args.results, plan.name)))
        return 0
    runner = Runner(plan, args.results, jobs=args.jobs, only=args.only, device=args.device,
                    budget_s=None if args.budget_min is None else 60 * args.budget_min)
    if args.status:
        print("\n".join(runner.report()))
        return 0
    try:
        failed = runner.run()
    except KeyboardInterrupt:
        print("ttq reproduce: interrupted; the runs were stopped at their last committed epoch", file=sys.stderr)
        return 130
    return 1 if failed else 0


def _add_table(sub) -> None:
    p = sub.add_parser("table", help="our CIFAR-10 test errors beside the paper's, over seeds, with intervals",
                       description="Read a plan's results folder (results/<plan>/: one folder per run, finished "
                                   "when it holds metrics.json) and print, per depth, the paper's CIFAR-10 test "
                                   "errors (%) beside ours for FP, TTQ and TWN. Each of our cells is mean +- "
                                   "sample std of the test error over seeds, with n = finished runs; unfinished "
                                   "runs are counted, never averaged. 'TTQ - FP' is TTQ's mean error minus FP's "
                                   "in percentage points (negative = TTQ better) with a 95% Welch t interval; "
                                   "n/a (n=1) means one run on a side, so no interval. The verdict under each "
                                   "depth says whether the interval excludes 0. Runs of different recipes are "
                                   "never averaged together: a depth gets one row per combination of recipes. "
                                   "A learning-rate search (runs evaluated on --holdout images, e.g. "
                                   "results/cifar10-lr-search) is shown as a search report instead: every recipe's "
                                   "held-out accuracy, the best per method, and each other recipe's gap to it "
                                   "with a 95% interval.")
    p.add_argument("results_dir", metavar="RESULTS_DIR", nargs="?",
                   help="a plan's results folder, e.g. results/cifar10")
    p.add_argument("--markdown", action="store_true", help="print a markdown table (for README and notebooks)")
    p.add_argument("--update", metavar="FILE",
                   help="instead of printing, rewrite every '<!-- ttq table PATH -->' ... '<!-- /ttq table -->' "
                        "block of the markdown FILE (e.g. README.md) from PATH's results (relative to FILE)")
    p.set_defaults(func=cmd_table)


def cmd_table(args) -> int:
    from .reproduction.report import render_plan, update_blocks

    if args.update:
        if args.results_dir:
            raise ValueError("--update FILE takes its results folders from FILE's blocks: drop RESULTS_DIR")
        changed = update_blocks(args.update)
        print(f"{args.update}: " + (f"updated {', '.join(changed)}" if changed else "every block is current"))
        return 0
    if not args.results_dir:
        raise ValueError("give a plan's results folder (e.g. results/cifar10), or --update FILE")
    print(render_plan(args.results_dir, markdown=args.markdown), end="")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ttq", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (_add_train, _add_eval, _add_pack, _add_size, _add_demo, _add_reproduce, _add_table):
        add(sub)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"ttq {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
