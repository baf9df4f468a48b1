"""``ttq eval``: the accuracy of a checkpoint or packed file, on the CIFAR-10 test split or an image folder's val."""
from __future__ import annotations

import json
from pathlib import Path

from .help_texts import DATA_HELP


def add(sub) -> None:
    p = sub.add_parser("eval", help="test accuracy of a checkpoint or packed file (CIFAR-10, or top-1/top-5 on "
                                    "an ImageNet-style folder)",
                       description="Evaluate a checkpoint (ours, a packed file, or ../shared/pretrained/*.th), "
                                   "normalising inputs as the checkpoint was trained: a CIFAR model on the CIFAR-10 "
                                   "test split; an ImageNet model (alexnet, resnet18) on DIR/val/<class>/*.JPEG with "
                                   "the evaluation crop, reporting top-1 and top-5.")
    p.add_argument("path", help="checkpoint: .safetensors (ours / packed) or .th / .pt")
    p.add_argument("--dataset", default="auto", choices=["auto", "cifar10", "imagenet"],
                   help="auto: imagenet for torchvision models (alexnet, resnet18), else cifar10")
    p.add_argument("--data", default=None,
                   help=DATA_HELP + ". --dataset imagenet: a folder holding val/<class>/*.JPEG (train/ optional)")
    p.add_argument("--test-subset", type=int, default=None, help="CIFAR-10: only N test images (a stratified pick)")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true",
                   help="end with one JSON line holding 'accuracy' (top-1, percent; ImageNet adds 'top5_accuracy')")
    image = p.add_argument_group("--dataset imagenet (omitted: the run's config.json beside the checkpoint, else "
                                 "the paper's 224 / 256)")
    image.add_argument("--image-size", type=int, default=None, help="the centre crop (224)")
    image.add_argument("--eval-resize", type=int, default=None, help="the shorter side before the crop (256)")
    image.add_argument("--batch-size", type=int, default=250)
    image.add_argument("--workers", type=int, default=4, help="decoding processes")
    p.set_defaults(func=cmd_eval)


def cmd_eval(args) -> int:
    from ..formats import load_model
    from ..training import resolve_device

    device = resolve_device(args.device)
    model, meta = load_model(args.path, map_location=device)
    dataset = args.dataset
    if dataset == "auto":
        dataset = "imagenet" if meta["arch"].startswith("torchvision.") else "cifar10"
    result = {"path": str(args.path), "arch": meta["arch"], "method": meta["method"]}
    result.update(_imagenet(args, model, meta, device) if dataset == "imagenet" else _cifar10(args, model, meta, device))
    if args.json:
        print(json.dumps(result))
    elif dataset == "imagenet":
        print(f"{args.path}: {meta['arch']} ({meta['method']}) top-1 {result['accuracy']:.2f}%, top-5 "
              f"{result['top5_accuracy']:.2f}% on {result['images']} val images of {result['data']}")
    else:
        print(f"{args.path}: {meta['arch']} ({meta['method']}) test accuracy {result['accuracy']:.2f}% on "
              f"{result['images']} images of {result['data_name']} ({result['data_origin']})")
    return 0


def _cifar10(args, model, meta, device) -> dict:
    from ..data import load_cifar10
    from ..training import accuracy

    if meta["arch"].startswith("torchvision."):
        raise ValueError(f"{args.path} holds a {meta['arch']} (an ImageNet model): evaluate it with --dataset "
                         "imagenet --data DIR")
    data = load_cifar10(args.data)
    if args.test_subset:  # a stratified pick: the test split may be stored class by class
        data = data.subset(None, args.test_subset)
    x, y = data.test_x, data.test_y
    acc = accuracy(model, x, y, meta["mean"], meta["std"], device=device, progress=True)
    return {"accuracy": acc, "images": len(y), "data": str(data.source), "data_name": data.name,
            "data_origin": data.origin}


def _imagenet(args, model, meta, device) -> dict:
    from ..training.config import TrainConfig
    from ..training.imagenet import evaluate_checkpoint

    if not args.data:
        raise ValueError("--dataset imagenet needs --data DIR, a folder holding val/<class>/*.JPEG")
    if args.test_subset:
        raise ValueError("--test-subset picks CIFAR-10 test images; an image folder is evaluated whole (make a "
                         "smaller val/ folder to evaluate part of it)")
    if not meta["arch"].startswith("torchvision."):
        raise ValueError(f"{args.path} holds a {meta['arch']} (a CIFAR model): evaluate it on CIFAR-10 "
                         "(--dataset cifar10)")
    saved = Path(args.path).parent / "config.json"  # the run's own crop sizes, when the file is a run's
    run = json.loads(saved.read_text()) if saved.is_file() else {}
    run = run if run.get("dataset") == "imagenet" else {}
    cfg = TrainConfig(dataset="imagenet", model=meta["arch"].removeprefix("torchvision."), data=args.data,
                      batch_size=args.batch_size, workers=args.workers,
                      image_size=args.image_size or run.get("image_size", 224),
                      eval_resize=args.eval_resize or run.get("eval_resize", 256))
    out = evaluate_checkpoint(model, meta, cfg, device)
    return {"accuracy": out["top1"], "top5_accuracy": out["top5"], "images": out["images"], "data": out["data"],
            "image_size": cfg.image_size, "eval_resize": cfg.eval_resize}
