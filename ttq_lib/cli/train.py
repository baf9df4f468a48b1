"""``ttq train``: the options of a run (CIFAR-10 or an image folder, one process or torchrun's)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from .help_texts import DATA_HELP


class _DeprecatedInit(argparse.Action):
    """``--init`` was the old name of ``--start-from``; it still works, with a note on stderr."""

    def __call__(self, parser, namespace, values, option_string=None):
        print("ttq train: note: --init is deprecated and will be removed; use --start-from (same meaning)",
              file=sys.stderr)
        setattr(namespace, self.dest, values)


def add(sub, options: bool = True) -> None:
    """``ttq train``'s parser; ``options=False`` gives its name and help alone (see ``cli.build_parser``)."""
    p = sub.add_parser("train", help="train or fine-tune a FP / TWN / TTQ CIFAR ResNet (AlexNet, ResNet-18: "
                                     "--dataset imagenet)",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Train a CIFAR ResNet. Defaults follow the official TTQ CIFAR-10 recipe "
                                   "(SGD momentum 0.9, lr 0.1 /10 at epochs 82, 123, 150, batch 128, weight "
                                   "decay 2e-4, t = 0.05). The paper fine-tunes TTQ from a trained "
                                   "full-precision model: pass it with --start-from.")
    p.set_defaults(func=cmd_train)
    if not options:
        return
    from ..layers import SCALE_INITS
    from ..models import DEPTHS
    from ..models.imagenet import IMAGENET_MODELS
    from ..training.config import COMPILE_MODES, METHODS, PRECISIONS, SCHEDULES, TrainConfig
    from ..training.imagenet_recipe import add_imagenet_arguments

    d = TrainConfig()
    p.add_argument("--model", default=d.model, choices=[*DEPTHS, *IMAGENET_MODELS],
                   help="a CIFAR ResNet; alexnet and resnet18 (torchvision's) need --dataset imagenet")
    p.add_argument("--method", default=d.method, choices=list(METHODS),
                   help="fp: full precision; twn: Ternary Weight Networks baseline; ttq: trained ternary")
    p.add_argument("--start-from", metavar="CHECKPOINT", default=None,
                   help="checkpoint to fine-tune from: 'pretrained' (the published full-precision --model, found "
                        "or downloaded, see `ttq inputs`), a .th file, or one of our checkpoints; omit to train "
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
    p.add_argument("--compile-mode", default=None, choices=list(COMPILE_MODES),
                   help="torch.compile's mode, implying --compile: reduce-overhead adds CUDA graphs, which replay "
                        "a step's kernels with one launch (on a GPU, what a ternary layer adds to a step is mostly "
                        "launch cost: README, 'On a GPU'); one process only; on a CPU the same as default")
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
    supervised = p.add_argument_group("when a supervisor runs the training (`ttq reproduce` sets these)")
    supervised.add_argument("--threads-file", metavar="FILE", default=None,
                            help="a file holding a CPU thread count, read before every epoch: the supervisor "
                                 "rewrites it when the runs sharing the machine come and go")
    supervised.add_argument("--progress-file", metavar="FILE", default=None,
                            help="rewrite FILE about once a second with the run's epoch, step and phase (JSON), "
                                 "for a live display elsewhere")


def cmd_train(args) -> int:
    from ..training import TrainConfig, train
    from ..training.config import load_config, matches_saved_run
    from ..training.distributed import teardown
    from ..training.hooks import RunHooks

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
        start_from, data = args.start_from, args.data
        if args.dataset == "cifar10":  # config.json records the inputs the resolver found, so a resume reuses them
            from ..data.inputs import resolve_data, resolve_pretrained

            if start_from == "pretrained":
                start_from = resolve_pretrained(args.model).value
            data = resolve_data(data).value
        cfg = TrainConfig(model=args.model, method=args.method, start_from=start_from, data=data, t=args.t,
                          sparsity=args.sparsity, scale_init=args.scale_init, keep_first=not args.quantize_first,
                          keep_last=not args.quantize_last, **_recipe(args), decay_scales=args.decay_scales,
                          schedule=args.schedule, dataset=args.dataset, image_size=args.image_size,
                          eval_resize=args.eval_resize, workers=args.workers, decode=args.decode,
                          sync_bn=args.sync_bn, seed=args.seed, threads=args.threads, device=args.device,
                          train_subset=args.train_subset, test_subset=args.test_subset, holdout=args.holdout,
                          scale_lr=args.scale_lr, precision=args.precision,
                          compile=args.compile or args.compile_mode is not None,
                          compile_mode=args.compile_mode or "default",
                          channels_last=args.channels_last, log_every=args.log_every, out=out)
        # torchrun --max-restarts N starts the same command again after a process died: continue the run it
        # began, and only that one (the folder's config.json must be this command's).
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0 and matches_saved_run(cfg):
            restarted = True
    try:
        metrics = train(cfg, resume=bool(args.resume) or restarted, overwrite=args.overwrite and not restarted,
                        hooks=RunHooks(args.threads_file, args.progress_file))
    finally:
        teardown()  # leave torchrun's process group (a no-op for one process)
    if metrics:  # rank 0 of several processes, or the only one
        print(json.dumps(metrics, indent=2))
    return 0


def _recipe(args) -> dict:
    from ..training.imagenet_recipe import RECIPE_FIELDS, recipe_values

    given = {k: getattr(args, k) for k in RECIPE_FIELDS if getattr(args, k) is not None}
    if "milestones" in given:
        given["milestones"] = [int(m) for m in given["milestones"].split(",") if m.strip()]
    return recipe_values(args.dataset, args.model, given)
