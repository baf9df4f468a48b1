"""``ttq train``: the options of a run (CIFAR-10 or an image folder, one process or torchrun's)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


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
    from ..training.imagenet_recipe import CIFAR_RECIPE

    add_config_options(p, p.add_argument_group("ImageNet-style data and several processes (torchrun)"),
                       CIFAR_RECIPE)
    p.add_argument("--init", dest="start_from", action=_DeprecatedInit, help="deprecated name of --start-from")
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


def add_config_options(p, imagenet, recipe_defaults: dict) -> None:
    """One option per field of TrainConfig, made from its declaration (help, choices, how the command line
    spells it: :func:`ttq_lib.training.settings.setting`).  A recipe's options default to None here, so that
    an ImageNet model's recipe can fill those the command line leaves out."""
    import dataclasses

    from ..training.config import RECIPE_NOTE, TrainConfig
    from ..training.settings import flag

    groups = {"rule": p.add_mutually_exclusive_group()}
    for f in dataclasses.fields(TrainConfig):
        cli = f.metadata["cli"]
        if cli is False:
            continue
        into = imagenet if cli.get("section") == "imagenet" else groups.get(cli.get("exclusive"), p)
        default = f.default if f.default is not dataclasses.MISSING else None
        kw = {"help": f.metadata["help"], "default": cli.get("default", default)}
        if cli.get("recipe"):
            shown = recipe_defaults[f.name]
            shown = ",".join(map(str, shown)) if isinstance(shown, list) else shown
            kw["help"] = "; ".join(filter(None, [kw["help"], f"default {shown}{RECIPE_NOTE}"]))
            kw["default"] = None
        if cli.get("invert") or (isinstance(default, bool) and "action" not in cli):
            kw["action"] = "store_true"
            kw["default"] = False
        elif "action" in cli:
            kw["action"] = cli["action"]
        else:
            kind = cli.get("type", type(default) if default is not None else str)
            kw["type"] = _int_list if kind == "int list" else kind
            choices = cli.get("choices", f.metadata.get("choices"))
            if choices is not None:
                kw["choices"] = list(choices)
            if "metavar" in cli:
                kw["metavar"] = cli["metavar"]
        if kw["default"] is None and kw.get("action") != "store_true":
            kw["help"] += "%(default).0s"  # prints nothing: keeps the formatter from adding "(default: None)"
        into.add_argument(flag(f), dest=f.name, **kw)


def _int_list(text: str) -> list[int]:
    """'82,123,150' -> [82, 123, 150] (--milestones)."""
    try:
        return [int(m) for m in text.split(",") if m.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of epochs, e.g. 82,123,150") \
            from None


def cmd_train(args) -> int:
    from ..training import TrainConfig, train
    from ..training.config import load_config, matches_saved_run
    from ..training.settings import names
    from ..training.distributed import teardown
    from ..training.hooks import ENV_KILL_AT, RunHooks

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
        given = {f: getattr(args, f) for f in names(TrainConfig) if hasattr(args, f)}
        given.update(start_from=start_from, data=data, out=out, keep_first=not args.keep_first,
                     keep_last=not args.keep_last, compile=args.compile or args.compile_mode is not None,
                     compile_mode=args.compile_mode or "default", **_recipe(args))
        cfg = TrainConfig(**given)
        # torchrun --max-restarts N starts the same command again after a process died: continue the run it
        # began, and only that one (the folder's config.json must be this command's).
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", 0)) > 0 and matches_saved_run(cfg):
            restarted = True
    try:
        metrics = train(cfg, resume=bool(args.resume) or restarted, overwrite=args.overwrite and not restarted,
                        hooks=RunHooks(args.threads_file, args.progress_file, os.environ.get(ENV_KILL_AT)))
    finally:
        teardown()  # leave torchrun's process group (a no-op for one process)
    if metrics:  # rank 0 of several processes, or the only one
        print(json.dumps(metrics, indent=2))
    return 0


def _recipe(args) -> dict:
    from ..training.imagenet_recipe import RECIPE_FIELDS, recipe_values

    given = {k: getattr(args, k) for k in RECIPE_FIELDS if getattr(args, k) is not None}
    return recipe_values(args.dataset, args.model, given)
