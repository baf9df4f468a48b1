"""The ``ttq`` command line: train, evaluate, pack and inspect ternary models; run and report reproductions.

One module per command (or pair of commands); each gives ``add(sub)`` its parser and a ``cmd_*`` function."""
from __future__ import annotations

import argparse
import os
import sys

from . import demo, evaluate, files, inputs, plans, train

DESCRIPTION = """\
Trained Ternary Quantization (Zhu, Han, Mao, Dally, ICLR 2017) on CIFAR-10 and ImageNet-style folders.

Every quantized layer keeps latent full-precision weights w and learns two scales Wp, Wn:
weights above t*max|w| become +Wp, below -t*max|w| become -Wn, the rest 0.

  ttq inputs                                                                where data and models come from
  ttq train --start-from pretrained --epochs 12 --schedule cosine           fine-tune TTQ from the published FP
  ttq eval results/.../last.safetensors                                     test accuracy
  ttq pack results/.../last.safetensors -o model.ttq.safetensors            2-bit / base-3 file
  ttq size results/.../last.safetensors                                     per-layer size table
  ttq demo                                                                  ternarize a pretrained model
  ttq reproduce reproduce/cifar10.toml --jobs 2 --budget-min 170            the paper's table, resumably
  ttq table results/cifar10                                                 ours beside the paper's
  ttq train --dataset imagenet --data DIR --model resnet18                  ImageNet-style folders (torchrun)
"""

COMMANDS = (train.add, evaluate.add, files.add_pack, files.add_size, demo.add, plans.add_reproduce, plans.add_table,
            inputs.add)


#: Commands whose options take their defaults and choices from modules that import torch (about 2 s).
TORCH_OPTIONS = {train.add: "train", files.add_pack: "pack"}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command; of those in ``TORCH_OPTIONS`` only ``command`` gets its options (the others
    their name and help), so that ``ttq table`` or ``ttq --help`` does not wait for torch to import."""
    parser = argparse.ArgumentParser(prog="ttq", description=DESCRIPTION,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in COMMANDS:
        if add in TORCH_OPTIONS:
            add(sub, options=TORCH_OPTIONS[add] == command)
        else:
            add(sub)
    return parser


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    command = next((a for a in argv if not a.startswith("-")), None)  # ttq has no option that takes a value
    args = build_parser(command).parse_args(argv)
    try:
        rc = args.func(args)
        sys.stdout.flush()  # a reader that went away (`| head`) shows here, not as a traceback at exit
        return rc
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        print(f"ttq {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `ttq ... | head` closed the pipe: not an error of ours, and nothing to print
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit's flush
        return 0
