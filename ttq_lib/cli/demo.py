"""``ttq demo``: ternarize a pretrained ResNet without training, before and after BN recalibration."""
from __future__ import annotations

from ..data.inputs import PRETRAINED_FILES
from .help_texts import DATA_HELP


def add(sub) -> None:
    p = sub.add_parser("demo", help="ternarize a pretrained ResNet and watch batch-norm recalibration fix it",
                       description="Load a full-precision CIFAR ResNet, ternarize it with TTQ (no training), "
                                   "and evaluate: before, right after, and after re-estimating batch-norm "
                                   "statistics on training images.")
    p.add_argument("--model", default="resnet20", choices=list(PRETRAINED_FILES),
                   help="which published full-precision CIFAR ResNet to ternarize (found or downloaded, see "
                        "`ttq inputs`)")
    p.add_argument("--checkpoint", default=None,
                   help="a full-precision checkpoint to use instead of the published --model")
    p.add_argument("--data", default=None, help=DATA_HELP)
    p.add_argument("--test-subset", type=int, default=2000)
    p.add_argument("--t", type=float, default=0.05)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args) -> int:
    from ..convert import ternarize_model
    from ..data import load_cifar10
    from ..data.inputs import resolve_pretrained
    from ..formats import load_model
    from ..training import accuracy, recalibrate_bn_on

    checkpoint = resolve_pretrained(args.model, args.checkpoint)
    model, meta = load_model(checkpoint.value)
    data = load_cifar10(args.data)
    print(f"model: {checkpoint}\ndata:  {data.name}, {data.source} ({data.origin})", flush=True)
    # stratified picks (the test split may be stored class by class), never more than the split holds
    data = data.subset(min(2048, len(data.train_y)), min(args.test_subset, len(data.test_y)))
    x, y = data.test_x, data.test_y
    mean, std = meta["mean"], meta["std"]
    rows = [("full precision", accuracy(model, x, y, mean, std))]
    for method, scale_init in (("ttq", "one"), ("ttq", "mean"), ("twn", "one")):
        m, _ = load_model(checkpoint.value)
        ternarize_model(m, method=method, t=args.t if method == "ttq" else None, scale_init=scale_init)
        before = accuracy(m, x, y, mean, std)
        recalibrate_bn_on(m, data.train_x, data.train_y, mean, std, 2048)
        rows.append((f"{method} (Wp, Wn init {scale_init})" if method == "ttq" else method, before,
                     accuracy(m, x, y, mean, std)))
    print(f"{meta['arch']} on {len(y)} test images of {data.source}")
    print(f"{'model':28s} {'no training':>12s} {'BN recalibrated':>16s}")
    for r in rows:
        print(f"{r[0]:28s} {r[1]:11.2f}% " + (f"{r[2]:15.2f}%" if len(r) > 2 else ""))
    return 0
