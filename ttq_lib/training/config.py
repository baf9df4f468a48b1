"""One training run's choices (:class:`TrainConfig`), its learning-rate schedule, and the model it starts from.

The defaults are the official CIFAR-10 recipe of the TTQ code: SGD with momentum 0.9, learning rate 0.1
divided by 10 at epochs 82, 123 and 150, batch 128, weight decay 2e-4, threshold factor t = 0.05.

How a step runs (``precision``, ``compile``, ``channels_last``, ``log_every``) does not change the recipe; a
config.json written before these options existed loads with the values those versions used (fp32, eager,
NCHW), so such a run resumes bit-identically.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from ..data.inputs import DATA_HELP
from ..formats import write_json_atomic
from ..layers import SCALE_INITS, TERNARY_METHODS
from ..models import DEPTHS
from ..models.imagenet import IMAGENET_MODELS
from ..thresholds import DEFAULT_T, Rule
from .imagenet_recipe import DATASETS, DECODERS, IMAGENET_FIELDS, OPTIMIZERS, _is_int, validate_imagenet
from .settings import check_fields, names, setting

#: What a run can train: full precision, or one of the ternary quantizers.
METHODS = ("fp", *TERNARY_METHODS)
SCHEDULES = ("step", "cosine")
#: fp32, or bf16 autocast of the forward pass (weights, gradients and optimizer state stay fp32).  No fp16:
#: its narrow range would need a gradient scaler, while bf16 has fp32's exponent range.
PRECISIONS = ("fp32", "bf16")
#: torch.compile's modes: "reduce-overhead" adds CUDA graphs (a whole step's kernels replayed with one launch,
#: which removes the per-operation host cost on a GPU; on a CPU it is "default"); "max-autotune" also times
#: kernel variants while compiling.
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")


def uses_cudagraphs(mode: str | None) -> bool:
    """Whether a torch.compile ``mode`` records CUDA graphs, so each training step must be marked as a new one
    (:func:`ttq_lib.training.loop.train_step`)."""
    return mode == "reduce-overhead"


#: What a config.json written before a field existed meant by its absence: the behaviour of those versions.
#: (channels_last's default for new runs depends on the device; old runs always trained NCHW.)
OLD_DEFAULTS = {"channels_last": False}
#: Keys of config.json written before a rename, and their names now.
RENAMED_KEYS = {"init": "start_from"}
CONFIG_FILE = "config.json"
#: ``ttq train``'s note on the options a recipe fills in when the command line leaves them out.
RECIPE_NOTE = " (--dataset imagenet: the model's recipe, see README)"


def _at_least_one(cfg, value) -> None:
    if value < 1:
        raise ValueError("--epochs and --batch-size must be at least 1")


def _positive_lr(cfg, value) -> None:
    if not value > 0:
        raise ValueError(f"--lr {value} must be positive")


def _precision(cfg, value) -> None:
    if value not in PRECISIONS:
        raise ValueError(f"--precision {value} is not one of {', '.join(PRECISIONS)} (fp16 would need a gradient "
                         "scaler; bf16 keeps fp32's range)")


def _true_or_false(cfg, value, name: str = "compile") -> None:
    if not (isinstance(value, bool) or (name == "channels_last" and value is None)):
        raise ValueError(f"{name}={value!r} must be true or false")


def _log_every(cfg, value) -> None:
    if not _is_int(value) or value < 1:
        raise ValueError(f"--log-every {value} must be a whole number >= 1: the progress bar reads the loss back "
                         "every that many steps (20 is a good value)")


def _scale_lr(cfg, value) -> None:
    if value is None:
        return
    if cfg.method != "ttq":
        raise ValueError(f"--scale-lr sets the learning rate of TTQ's scales Wp, Wn; a {cfg.method} model has none: "
                         "drop --scale-lr or use --method ttq")
    if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"--scale-lr {value} must be a finite number >= 0 (0 freezes Wp, Wn; omit it to use --lr)")


def _holdout(cfg, value) -> None:
    if value is None:
        return
    if not _is_int(value) or value < 1:
        raise ValueError(f"--holdout {value} must be a whole number >= 1 of training images to hold out (e.g. "
                         "5000), or omitted to evaluate on the test split")
    if cfg.test_subset is not None:
        raise ValueError(f"--test-subset picks test images, but --holdout {value} never evaluates on the test "
                         "split: drop --test-subset (--holdout sets how many images are evaluated)")


def _compile_mode(cfg, value) -> None:
    if value != "default" and not cfg.compile:
        raise ValueError(f"compile_mode={value!r} applies to a compiled model: set compile = true as well "
                         "(`ttq train --compile-mode` does)")


@dataclass
class TrainConfig:
    """Every choice a run makes; saved as config.json so that ``--resume`` continues the same run.  Each field is
    declared once (:func:`~ttq_lib.training.settings.setting`): its help, group and check."""
    model: str = setting("resnet20", "a CIFAR ResNet; alexnet and resnet18 (torchvision's) need --dataset imagenet",
                         runner_sets=True, cli={"choices": [*DEPTHS, *IMAGENET_MODELS]})
    method: str = setting("ttq", "fp: full precision; twn: Ternary Weight Networks baseline; ttq: trained ternary",
                          choices=METHODS)
    start_from: str | None = setting(
        None, "checkpoint to fine-tune from: 'pretrained' (the published full-precision --model, found or "
        "downloaded, see `ttq inputs`), a .th file, or one of our checkpoints; omit to train from scratch",
        group="path", runner_sets=True, cli={"metavar": "CHECKPOINT"})
    data: str | None = setting(None, DATA_HELP, group="path", runner_sets=True)
    t: float | None = setting(None, "TTQ's threshold factor: delta = t * max|w|; omitted, the paper's 0.05. TWN has "
                              "no t (its threshold is 0.7 * mean|w|)", cli={"type": float, "exclusive": "rule"})
    sparsity: float | None = setting(None, "instead of t: fixed share r of zero weights per layer (paper sweeps "
                                     "0..0.5)", cli={"type": float, "exclusive": "rule"})
    scale_init: str = setting("one", "initial Wp, Wn: 1.0 as in the official code, or each region's mean |w|",
                              choices=SCALE_INITS)
    keep_first: bool = setting(True, "also ternarize the first conv", cli={"flag": "--quantize-first", "invert": True})
    keep_last: bool = setting(True, "also ternarize the last linear layer",
                              cli={"flag": "--quantize-last", "invert": True})
    epochs: int = setting(164, "", check=_at_least_one, cli={"recipe": True})
    batch_size: int = setting(128, "the global batch, split among torchrun's processes", check=_at_least_one,
                              cli={"recipe": True})
    lr: float = setting(0.1, "", check=_positive_lr, cli={"recipe": True})
    momentum: float = setting(0.9, "", cli={"recipe": True})
    weight_decay: float = setting(2e-4, "", cli={"recipe": True})
    decay_scales: bool = setting(False, "apply weight decay to Wp, Wn too (the official script did, by its name "
                                 "filter)")
    schedule: str = setting("step", "step (milestones, x --lr-decay each) or cosine", choices=SCHEDULES)
    milestones: list = setting(help="epochs where the step schedule multiplies lr by --lr-decay",
                               factory=lambda: [82, 123, 150], cli={"recipe": True, "type": "int list"})
    seed: int = setting(0, "seeds the initial weights (from scratch), the data order and the augmentation",
                        runner_sets=True)
    threads: int | None = setting(None, "torch CPU threads (default: torch's choice)", group="execution",
                                  runner_sets=True, cli={"type": int})
    device: str = setting("auto", "auto, cpu, cuda, cuda:1, ...", group="execution", runner_sets=True)
    train_subset: int | None = setting(None, "train on only this many images", cli={"type": int})
    test_subset: int | None = setting(None, "test on only this many images", cli={"type": int})
    holdout: int | None = setting(
        None, "hold out N training images (a stratified pick, the same for every run and seed), train on the rest "
        "and evaluate on them, never on the test split: for choosing learning rates", check=_holdout,
        cli={"type": int, "metavar": "N"})
    scale_lr: float | None = setting(None, "learning rate of TTQ's Wp, Wn (their own optimizer group, on the same "
                                     "schedule); omitted, --lr; 0 freezes them", check=_scale_lr,
                                     cli={"type": float, "metavar": "LR"})
    precision: str = setting("fp32", "bf16: run the forward pass under bfloat16 autocast (weights and optimizer "
                             "stay fp32)", check=_precision, cli={"choices": PRECISIONS})
    compile: bool = setting(False, "torch.compile the model (the first steps compile)", group="execution",
                            check=_true_or_false)
    compile_mode: str = setting(
        "default", "torch.compile's mode, implying --compile: reduce-overhead adds CUDA graphs, which replay a "
        "step's kernels with one launch (on a GPU, what a ternary layer adds to a step is mostly launch cost: "
        "README, 'On a GPU'); one process only; on a CPU the same as default", group="execution",
        choices=COMPILE_MODES, check=_compile_mode, cli={"default": None})
    channels_last: bool | None = setting(
        None, "channels_last (NHWC) memory format; omitted, on for CPU (measured faster), off for CUDA",
        group="execution", check=lambda cfg, v: _true_or_false(cfg, v, "channels_last"),
        cli={"action": argparse.BooleanOptionalAction})
    log_every: int = setting(20, "read the loss back for the progress bar every N steps (each read waits for the "
                             "device)", group="execution", check=_log_every, cli={"metavar": "N"})
    recipe: str | None = setting(None, "the plan's name for these settings (kept in metrics.json)",
                                 runner_sets=True, cli=False)
    dataset: str = setting("cifar10", "imagenet: --data is a folder of train/<class>/*.JPEG and val/<class>/*.JPEG",
                           choices=DATASETS, cli={"section": "imagenet"})
    optimizer: str = setting("sgd", "", choices=OPTIMIZERS, cli={"section": "imagenet", "recipe": True})
    adam_eps: float = setting(1e-8, "Adam's epsilon", cli={"section": "imagenet", "recipe": True})
    lr_decay: float = setting(0.1, "", cli={"recipe": True})
    image_size: int = setting(224, "training crop and evaluation crop, in pixels", cli={"section": "imagenet"})
    eval_resize: int = setting(256, "evaluation resizes the shorter side to this, then takes the centre crop",
                               cli={"section": "imagenet"})
    workers: int = setting(4, "decoding processes per training process (0: decode in the training process)",
                           cli={"section": "imagenet"})
    decode: str = setting("cpu", "cpu: JPEGs are decoded by the workers; device: on the GPU with nvJPEG (CUDA only)",
                          choices=DECODERS, cli={"section": "imagenet"})
    sync_bn: bool = setting(False, "SyncBatchNorm: batch statistics over all processes' images (CUDA only)",
                            cli={"section": "imagenet"})
    out: str = setting("runs/run", "run directory (default runs/<model>-<method>-<time>)", group="execution",
                       runner_sets=True, cli={"default": None})

    def __post_init__(self):
        if self.method in TERNARY_METHODS:  # the rule checks itself once, here; t then records the factor in use
            self.t = self.rule.t

    @property
    def rule(self) -> Rule:
        """The threshold rule of a ternary run (:class:`~ttq_lib.thresholds.Rule`)."""
        return Rule(self.method, self.t, self.sparsity)

    @classmethod
    def from_dict(cls, values: dict, where: str = "config", strict: bool = True) -> "TrainConfig":
        """A config from a saved ``config.json``: old key names are renamed; unknown keys are an error, or
        dropped with ``strict=False`` (reading an old run only to show it)."""
        values = {RENAMED_KEYS.get(k, k): v for k, v in values.items()}
        if values.get("method") == "twn" and values.get("t") == DEFAULT_T:
            values["t"] = None  # older versions recorded the unused default t for TWN runs
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown and not strict:
            values = {k: v for k, v in values.items() if k in known}
        elif unknown:
            raise ValueError(f"{where} has unknown key(s) {unknown}: it was written by another version of "
                             f"ttq-workbook or edited by hand; the known keys are {sorted(known)}")
        for key, old in OLD_DEFAULTS.items():
            values.setdefault(key, old)
        return cls(**values)

    def validate(self) -> None:
        """Every field's check (:func:`~ttq_lib.training.settings.check_fields`), the data set's first."""
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset {self.dataset} is not one of {', '.join(DATASETS)}")
        if self.dataset == "imagenet":
            validate_imagenet(self)
        elif self.model not in DEPTHS:
            hint = (f" ({self.model} is an ImageNet model: add --dataset imagenet --data FOLDER)"
                    if self.model in IMAGENET_MODELS else "")
            raise ValueError(f"--model {self.model}: invalid choice for CIFAR-10, not one of {', '.join(DEPTHS)}"
                             f"{hint}")
        check_fields(self)


#: Fields that may hold a file path: config.json stores them relative to the run folder.
PATH_FIELDS = names(TrainConfig, "path")
#: How a run executes, not what it computes: these may differ between the sessions that continue one run (a CPU
#: session, then a GPU call); the last bits of the floats may follow them (thread count, memory format and
#: compiled kernels change the order of summation), as they do between any two machines.
EXECUTION_FIELDS = names(TrainConfig, "execution")


def default_channels_last(device_type: str) -> bool:
    """Whether a new run on this kind of device trains in channels_last (NHWC) memory format.

    CPU: yes.  oneDNN's convolutions are NHWC-native, and NCHW pays for reorders around every convolution:
    measured on the 2-core machine (batch 128) a ResNet-20 step went from 289 to 212 ms (full precision) and
    285 to 214 ms (TTQ) on 2 threads, idle; on 1 thread with the machine busy, 1.22x (TTQ) and 1.25x (FP)
    the images/s for ResNet-20, 1.26x and 1.28x for ResNet-56 (``benchmarks/train_throughput.py``).  Other
    devices (CUDA): no, the earlier path, until measured -- cuDNN gains from NHWC mostly with tensor-core math
    on wide layers, and these ResNets' 16-64 channels are narrow; run ``benchmarks/train_throughput.py`` on
    the GPU and pass ``--channels-last`` where it is faster.
    """
    return device_type == "cpu"


def learning_rate(cfg: TrainConfig, epoch: int, step: int, steps_per_epoch: int, base: float | None = None) -> float:
    """The learning rate at (epoch, step): a pure function, so a resumed run follows the same curve.

    The schedule multiplies a base rate: ``cfg.lr``, or ``base`` (``cfg.scale_lr`` for the group of Wp, Wn)."""
    base = cfg.lr if base is None else base
    if cfg.schedule == "cosine":
        progress = (epoch + step / steps_per_epoch) / cfg.epochs
        return 0.5 * base * (1 + math.cos(math.pi * progress))
    return base * cfg.lr_decay ** sum(epoch >= m for m in cfg.milestones)


def save_config(cfg: TrainConfig, run_dir: str | os.PathLike) -> None:
    """Write ``config.json``: paths relative to the run folder, so the folder can move with its inputs
    or be resumed from any working directory (``out`` is the folder itself, written as ".")."""
    run_dir = Path(run_dir)
    values = dataclasses.asdict(cfg)
    for key in PATH_FIELDS:
        if values[key] is not None and Path(values[key]).exists():
            values[key] = os.path.relpath(Path(values[key]).resolve(), run_dir.resolve())
    values["out"] = "."
    for key, default in IMAGENET_FIELDS.items():  # a CIFAR run's config.json keeps its earlier keys
        if values[key] == default and cfg.dataset == "cifar10":
            del values[key]
    write_json_atomic(run_dir / CONFIG_FILE, values)


def load_config(run_dir: str | os.PathLike) -> TrainConfig:
    """The config of the run in ``run_dir``, its paths made usable from the current directory again."""
    run_dir = Path(run_dir)
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no {CONFIG_FILE}")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}); restore it from a copy or start the run again "
                         "with --overwrite") from None
    if not isinstance(values, dict):
        raise ValueError(f"{path} does not hold a JSON object of settings")
    cfg = TrainConfig.from_dict(values, where=str(path))
    for key in PATH_FIELDS:
        value = getattr(cfg, key)
        # Relative to the run folder (this version) or to the directory the run started in (older runs).
        if value is not None and not Path(value).is_absolute() and (run_dir / value).exists():
            setattr(cfg, key, os.path.normpath(run_dir / value))
    cfg.out = str(run_dir)
    return cfg


def matches_saved_run(cfg: TrainConfig) -> bool:
    """Whether ``cfg.out`` holds a run started with exactly ``cfg`` (paths compared as files, not strings)."""
    if not (Path(cfg.out) / CONFIG_FILE).is_file():
        return False
    try:
        saved, new = dataclasses.asdict(load_config(cfg.out)), dataclasses.replace(cfg)
        new.validate()
    except ValueError:
        return False
    new = dataclasses.asdict(new)
    for values in (saved, new):
        for key in (*PATH_FIELDS, "out"):
            if values[key] is not None and Path(values[key]).exists():
                values[key] = str(Path(values[key]).resolve())
    return saved == new


