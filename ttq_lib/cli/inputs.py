"""``ttq inputs``: where CIFAR-10 and the pretrained ResNets come from on this machine, and fetching them."""
from __future__ import annotations


def add(sub) -> None:
    p = sub.add_parser("inputs", help="show where the data and the pretrained models come from; --download fetches",
                       description="Ask the input resolver where each input would come from, in its order: an "
                                   "explicit argument; $TTQ_DATA / $TTQ_PRETRAINED_DIR; the offline copy beside the "
                                   "checkout (../shared, or $TTQ_OFFLINE_COPY); the user cache ($TTQ_CACHE, default "
                                   "~/.cache/ttq-workbook); then a download (CIFAR-10 through torchvision, from "
                                   "$TTQ_CIFAR10_URL when set; the pretrained ResNets from $TTQ_PRETRAINED_URL, "
                                   "default the akamaster/pytorch_resnet_cifar10 GitHub folder, each checked "
                                   "against the SHA-256 prefix in its name). Without --download nothing is fetched.")
    p.add_argument("--download", action="store_true",
                   help="fetch what is missing into the user cache (a course server can fill a shared cache once)")
    p.set_defaults(func=cmd_inputs)


def cmd_inputs(args) -> int:
    from ..data.inputs import PRETRAINED_FILES, InputUnavailable, cache_dir, resolve_data, resolve_pretrained
    from ..data.sources import fetch_cifar10

    print(f"user cache: {cache_dir()}")
    missing = 0
    print(f"data: {fetch_cifar10() if args.download else resolve_data(None)}")
    for model in PRETRAINED_FILES:
        try:
            print(f"{model}: {resolve_pretrained(model, download=args.download)}")
        except InputUnavailable as exc:
            missing += 1
            print(f"{model}: not here ({str(exc).split('. ')[0]}); `ttq inputs --download` fetches it")
    return 1 if missing and args.download else 0
