"""``ttq pack`` and ``ttq size``: packed model files and what each layer costs."""
from __future__ import annotations

from pathlib import Path


def add_pack(sub, options: bool = True) -> None:
    """``ttq pack``'s parser; ``options=False`` gives its name and help alone (see ``cli.build_parser``)."""
    p = sub.add_parser("pack", help="write a packed ternary model file (2-bit or base-3 codes)",
                       description="Pack a ternary checkpoint: each ternary layer's weights become codes in "
                                   "{-1, 0, +1} (2 bits, or 5 per byte in base 3 = 1.6 bits) plus Wp and Wn; "
                                   "other tensors are kept as they are. `ttq eval FILE` evaluates the result.")
    p.set_defaults(func=cmd_pack)
    if not options:
        return
    from ..bitpack import SCHEMES

    p.add_argument("path", help="a TTQ or TWN checkpoint (.safetensors)")
    p.add_argument("-o", "--output", required=True, help="packed file to write (.safetensors); never the input")
    p.add_argument("--force", action="store_true", help="replace OUTPUT if it exists (it is refused otherwise)")
    p.add_argument("--scheme", default="base3", choices=list(SCHEMES),
                   help="base3: 5 codes per byte (1.6 bits); 2bit: 4 codes per byte, the paper's count")


def cmd_pack(args) -> int:
    from ..formats import pack_checkpoint

    out = pack_checkpoint(args.path, args.output, scheme=args.scheme, overwrite=args.force)
    src, dst = Path(args.path).stat().st_size, Path(args.output).stat().st_size
    print(f"wrote {out} ({dst:,} bytes; {args.path}: {src:,} bytes, {src / dst:.1f}x smaller)")
    return 0


def add_size(sub) -> None:
    p = sub.add_parser("size", help="per-layer size table: fp32, fp16, int8, 2-bit, base-3, entropy bound")
    p.add_argument("path", help="a checkpoint or packed file")
    p.add_argument("--markdown", action="store_true", help="print a markdown table")
    p.set_defaults(func=cmd_size)


def cmd_size(args) -> int:
    from ..formats import load_model, size_report

    model, _ = load_model(args.path)
    report = size_report(model)
    print(report.to_markdown() if args.markdown else report)
    return 0
