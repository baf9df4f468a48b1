"""``ttq reproduce`` and ``ttq table``: running a reproduction plan and reporting it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .help_texts import DATA_HELP


def add_reproduce(sub) -> None:
    p = sub.add_parser("reproduce", help="run a reproduction plan (depths x methods x seeds), resumably",
                       formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                       description="Run every unfinished run of a plan file (reproduce/cifar10.toml is the project's): "
                                   "results/<plan>/<run>/ per run, N trainings at once, stopping by itself before "
                                   "--budget-min ends with every run checkpointed. Call it again, on this or "
                                   "another machine, to continue where it stopped. It first prints the runs and an "
                                   "estimate of their time here; then a live line per run going (epoch, step, last "
                                   "accuracy, time left): redrawn in place on a terminal, plain lines elsewhere. "
                                   "Each run that ends prints its accuracy (and the committed run's, when it is the "
                                   "same run); the end is one line per run.")
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
    p.add_argument("--dry-run", action="store_true",
                   help="print the runs that would run and how long they should take here (epoch times from "
                        "runs on this machine, else a few training steps timed now), then stop")
    p.add_argument("--progress-every", type=float, metavar="SECONDS", default=30.0,
                   help="when the output is not a terminal (a log file, CI, a notebook): print the progress lines "
                        "this often (on a terminal they are redrawn in place)")
    p.add_argument("--export", metavar="DIR", default=None,
                   help="instead of running, pack results/<plan>/ into DIR as a few checked files (parts of at most "
                        "15 MiB and a manifest): how a GPU call's results travel home (scripts/device_reproduce.sh)")
    p.add_argument("--import", dest="import_dir", metavar="DIR", default=None,
                   help="instead of running, merge an --export from DIR into results/<plan>/: runs finished here "
                        "are kept, new runs added, unfinished ones replaced where the incoming copy is further")
    p.set_defaults(func=cmd_reproduce)


def cmd_reproduce(args) -> int:
    from ..reproduction.plan import load_plan
    from ..reproduction.runner import Runner

    plan = load_plan(args.plan, data=args.data)
    if args.export or args.import_dir:
        from ..reproduction.transfer import export_plan, import_plan

        if args.export and args.import_dir:
            raise ValueError("--export and --import go in opposite directions: give one of them")
        if args.export:
            for path in export_plan(Path(args.results) / plan.name, args.export):
                print(f"{path} ({path.stat().st_size / 2 ** 20:.1f} MiB)")
        else:
            print("\n".join(import_plan(args.import_dir, args.results, plan.name)))
        return 0
    from ..reproduction.live import make_display

    display = None if args.status or args.dry_run else make_display(sys.stdout, args.jobs, args.progress_every)
    runner = Runner(plan, args.results, jobs=args.jobs, only=args.only, device=args.device,
                    budget_s=None if args.budget_min is None else 60 * args.budget_min, display=display,
                    log=print if display is None else display.event)
    if args.status or args.dry_run:
        print("\n".join(runner.report() if args.status else runner.dry_run()))
        return 0
    try:
        failed = runner.run()
    except KeyboardInterrupt:
        print("ttq reproduce: interrupted; the runs were stopped at their last committed epoch", file=sys.stderr)
        return 130
    return 1 if failed else 0


def add_table(sub) -> None:
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
    p.add_argument("--beside", metavar="DIR", default=None,
                   help="also print the table of another results folder (e.g. the committed results/cifar10 beside "
                        "your runs/cifar10) and say whether the two were run on the same data")
    p.add_argument("--update", metavar="FILE",
                   help="instead of printing, rewrite every '<!-- ttq table PATH -->' ... '<!-- /ttq table -->' "
                        "block of the markdown FILE (e.g. README.md) from PATH's results (relative to FILE)")
    p.set_defaults(func=cmd_table)


def cmd_table(args) -> int:
    from ..reproduction.report import render_plan, update_blocks

    if args.update:
        if args.results_dir:
            raise ValueError("--update FILE takes its results folders from FILE's blocks: drop RESULTS_DIR")
        changed = update_blocks(args.update)
        print(f"{args.update}: " + (f"updated {', '.join(changed)}" if changed else "every block is current"))
        return 0
    if not args.results_dir:
        raise ValueError("give a plan's results folder (e.g. results/cifar10), or --update FILE")
    print(render_plan(args.results_dir, markdown=args.markdown), end="")
    if args.beside:
        from ..reproduction.report import data_note

        print(f"\nBeside them, {args.beside}:\n" + render_plan(args.beside, markdown=args.markdown), end="")
        note = data_note(args.results_dir, args.beside)
        if note:
            print("\n" + note)
    return 0
