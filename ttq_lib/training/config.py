"""One training run's choices (:class:`TrainConfig`), its learning-rate schedule, and the model it starts from.

The defaults are the official CIFAR-10 recipe of the TTQ code: SGD with momentum 0.9, learning rate 0.1
divided by 10 at epochs 82, 123 and 150, batch 128, weight decay 2e-4, threshold factor t = 0.05.

How a step runs (``precision``, ``compile``, ``channels_last``, ``log_every``) does not change the recipe; a
config.json written before these options existed loads with the values those versions used (fp32, eager,
NCHW), so such a run resumes bit-identically.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch.nn as nn

from ..convert import ternarize_model
from ..formats import load_model, write_json_atomic
from ..layers import SCALE_INITS, TERNARY_METHODS, TernaryMixin
from ..models import CIFAR10_MEAN, CIFAR10_STD, DEPTHS, IMAGENET_MEAN, IMAGENET_STD, build_model
from ..models.imagenet import IMAGENET_MODELS, build_imagenet_model, imagenet_arch
from ..thresholds import DEFAULT_T, check_sparsity, check_t
from .imagenet_recipe import DATASETS, IMAGENET_FIELDS, _is_int, validate_imagenet

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
#: Fields that may hold a file path: config.json stores them relative to the run folder.
PATH_FIELDS = ("start_from", "data")
#: How a run executes, not what it computes: these may differ between the sessions that continue one run (a CPU
#: session, then a GPU call); the last bits of the floats may follow them (thread count, memory format and
#: compiled kernels change the order of summation), as they do between any two machines.
EXECUTION_FIELDS = ("out", "threads", "device", "log_every", "compile", "compile_mode", "channels_last")
CONFIG_FILE = "config.json"
@dataclass
class TrainConfig:
    """Every choice a run makes; saved as config.json so that ``--resume`` continues the same run."""
    model: str = "resnet20"
    method: str = "ttq"
    start_from: str | None = None    # checkpoint to fine-tune from; None trains from scratch
    data: str | None = None          # see ttq_lib.data.load_cifar10
    t: float | None = None           # threshold factor; None: the paper's 0.05 for TTQ, none for TWN
    sparsity: float | None = None
    scale_init: str = "one"          # Wp = Wn = 1 as in the official code, or "mean"
    keep_first: bool = True
    keep_last: bool = True
    epochs: int = 164
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 2e-4
    decay_scales: bool = False       # the official script also decayed Wp, Wn (its name filter matched them)
    schedule: str = "step"           # "step" (milestones, /10 each) or "cosine"
    milestones: list = field(default_factory=lambda: [82, 123, 150])
    seed: int = 0
    threads: int | None = None
    device: str = "auto"
    train_subset: int | None = None  # use only this many training images (tests, quick looks)
    test_subset: int | None = None
    holdout: int | None = None       # evaluate on this many held-out training images, never the test split
    scale_lr: float | None = None    # learning rate of Wp, Wn (their own group); None: the same as lr
    precision: str = "fp32"          # "bf16": autocast the forward pass to bfloat16
    compile: bool = False            # torch.compile the model for the training steps
    compile_mode: str = "default"    # torch.compile's mode (COMPILE_MODES)
    channels_last: bool | None = None  # None: the device's default (default_channels_last) at each start
    log_every: int = 20              # read the loss back for the progress bar every this many steps
    recipe: str | None = None        # the plan's name for these settings (ttq reproduce); kept in metrics.json
    dataset: str = "cifar10"         # "imagenet": an image folder (train/<class>/, val/<class>/) in ``data``
    optimizer: str = "sgd"           # "adam": the official AlexNet recipe
    adam_eps: float = 1e-8
    lr_decay: float = 0.1            # the step schedule multiplies lr by this at each milestone
    image_size: int = 224            # ImageNet: the training crop and evaluation crop (224 in the paper)
    eval_resize: int = 256           # ImageNet: evaluation resizes the shorter side to this, then crops
    workers: int = 4                 # ImageNet: decoding processes per training process
    decode: str = "cpu"              # ImageNet: "cpu" (in the workers) or "device" (nvJPEG on the GPU)
    sync_bn: bool = False            # SyncBatchNorm across processes (CUDA only)
    out: str = "runs/run"

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
        if self.dataset not in DATASETS:
            raise ValueError(f"--dataset {self.dataset} is not one of {', '.join(DATASETS)}")
        if self.dataset == "imagenet":
            validate_imagenet(self)
        elif self.model not in DEPTHS:
            hint = (f" ({self.model} is an ImageNet model: add --dataset imagenet --data FOLDER)"
                    if self.model in IMAGENET_MODELS else "")
            raise ValueError(f"--model {self.model}: invalid choice for CIFAR-10, not one of {', '.join(DEPTHS)}"
                             f"{hint}")
        if self.method not in METHODS:
            raise ValueError(f"--method {self.method} is not one of {', '.join(METHODS)}")
        if self.scale_init not in SCALE_INITS:
            raise ValueError(f"--scale-init {self.scale_init} is not one of {', '.join(SCALE_INITS)}")
        if self.sparsity is not None:
            check_sparsity(self.sparsity)
            if self.t is not None:
                raise ValueError("give either --t or --sparsity, not both")
        elif self.method == "twn" and self.t is not None:
            raise ValueError(f"--t {self.t} does not apply to TWN, whose threshold is 0.7 * mean|w|: drop it, or "
                             "use --sparsity r for a fixed share of zeros")
        elif self.method == "ttq":
            self.t = check_t(DEFAULT_T if self.t is None else self.t)  # recorded as used
        if self.epochs < 1 or self.batch_size < 1:
            raise ValueError("--epochs and --batch-size must be at least 1")
        if not self.lr > 0:
            raise ValueError(f"--lr {self.lr} must be positive")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"--schedule {self.schedule} is not one of {', '.join(SCHEDULES)}")
        self._validate_step_options()

    def _validate_step_options(self) -> None:
        """The options added for speed and for learning-rate searches (see ``ttq train --help``)."""
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision {self.precision} is not one of {', '.join(PRECISIONS)} (fp16 would need "
                             "a gradient scaler; bf16 keeps fp32's range)")
        for name in ("compile", "channels_last"):
            value = getattr(self, name)
            if not (isinstance(value, bool) or (name == "channels_last" and value is None)):
                raise ValueError(f"{name}={value!r} must be true or false")
        if self.compile_mode not in COMPILE_MODES:
            raise ValueError(f"--compile-mode {self.compile_mode} is not one of {', '.join(COMPILE_MODES)}")
        if self.compile_mode != "default" and not self.compile:
            raise ValueError(f"compile_mode={self.compile_mode!r} applies to a compiled model: set compile = true "
                             "as well (`ttq train --compile-mode` does)")
        if not _is_int(self.log_every) or self.log_every < 1:
            raise ValueError(f"--log-every {self.log_every} must be a whole number >= 1: the progress bar reads the "
                             "loss back every that many steps (20 is a good value)")
        if self.scale_lr is not None:
            if self.method != "ttq":
                raise ValueError(f"--scale-lr sets the learning rate of TTQ's scales Wp, Wn; a {self.method} model "
                                 "has none: drop --scale-lr or use --method ttq")
            if not (isinstance(self.scale_lr, (int, float)) and math.isfinite(self.scale_lr) and self.scale_lr >= 0):
                raise ValueError(f"--scale-lr {self.scale_lr} must be a finite number >= 0 (0 freezes Wp, Wn; "
                                 "omit it to use --lr)")
        if self.holdout is not None:
            if not _is_int(self.holdout) or self.holdout < 1:
                raise ValueError(f"--holdout {self.holdout} must be a whole number >= 1 of training images to hold "
                                 "out (e.g. 5000), or omitted to evaluate on the test split")
            if self.test_subset is not None:
                raise ValueError(f"--test-subset picks test images, but --holdout {self.holdout} never evaluates "
                                 "on the test split: drop --test-subset (--holdout sets how many images are "
                                 "evaluated)")


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


def check_against_checkpoint(cfg: TrainConfig, meta: dict) -> None:
    """Refuse options that contradict the ternary checkpoint a run starts from (they would be ignored)."""
    where = f"--start-from {cfg.start_from}"
    if meta.get("format") == "ttq-packed":
        raise ValueError(f"{where} is a packed file: packed files are for inference (ttq eval, ttq size) and "
                         "hold no latent weights to train; start from the checkpoint it was packed from (the run's "
                         "last.safetensors) or from a full-precision model")
    if meta["method"] == "fp":
        return
    if meta["method"] != cfg.method:
        raise ValueError(f"{where} is a {meta['method']} model; fine-tune it with --method {meta['method']} or "
                         "start from a full-precision checkpoint")
    # TWN's rule is 0.7 * mean|w| unless a fixed sparsity is asked for: only the sparsity can contradict.
    rule = ("sparsity", cfg.sparsity) if cfg.sparsity is not None else ("t", cfg.t)
    saved = ("sparsity", meta.get("sparsity")) if meta.get("sparsity") is not None else ("t", meta.get("t"))
    if cfg.method == "twn":
        rule, saved = (rule if rule[0] == "sparsity" else None), (saved if saved[0] == "sparsity" else None)
    if rule != saved:
        def say(r):
            return "TWN's 0.7 * mean|w|" if r is None else f"--{r[0]} {r[1]}"
        raise ValueError(f"{where} was ternarized with {say(saved)}, but this run asks for {say(rule)}: pass "
                         f"{say(saved)} to fine-tune it as it is, or start from a full-precision checkpoint "
                         "to change the threshold rule")
    if cfg.scale_init != "one":
        raise ValueError(f"{where} already has trained Wp, Wn; --scale-init only applies when a full-precision "
                         "model is ternarized: drop it")
    for key, flag in (("keep_first", "--quantize-first"), ("keep_last", "--quantize-last")):
        if key in meta and bool(meta[key]) != getattr(cfg, key):
            state = "kept in full precision" if meta[key] else "ternary"
            raise ValueError(f"{where} has its {key.split('_')[1]} layer {state}; "
                             f"{'drop' if meta[key] else 'add'} {flag} to fine-tune it as it is")


def _build_imagenet(cfg: TrainConfig, num_classes: int) -> tuple[nn.Module, dict]:
    """An ImageNet model from scratch, from one of our checkpoints, or from a torchvision state dict (.pth,
    e.g. torchvision's pretrained ResNet-18, read with ``weights_only=True``)."""
    norm = {"mean": list(IMAGENET_MEAN), "std": list(IMAGENET_STD)}
    if cfg.start_from is None:
        return build_imagenet_model(cfg.model, num_classes), norm
    if Path(cfg.start_from).suffix == ".safetensors":
        model, meta = load_model(cfg.start_from, imagenet_arch(cfg.model))
        check_against_checkpoint(cfg, meta)
        norm = {"mean": meta["mean"], "std": meta["std"]}
    else:
        from ..formats.checkpoint import load_state_dict_file
        from ..formats.model_meta import load_checked

        sd = load_state_dict_file(cfg.start_from)
        classifier = sd.get("fc.weight" if cfg.model == "resnet18" else "classifier.6.weight")
        # built with the file's classes, so that a mismatch is reported as such below, not as a shape error
        model = build_imagenet_model(cfg.model, num_classes if classifier is None else len(classifier))
        model = load_checked(model, sd, cfg.start_from)
    if getattr(model, "num_classes", num_classes) != num_classes:
        raise ValueError(f"--start-from {cfg.start_from} has {model.num_classes} classes, the data {num_classes}: "
                         "fine-tune from a model of the same classes")
    return model, norm


def build(cfg: TrainConfig, num_classes: int = 10) -> tuple[nn.Module, dict]:
    """The model to train and its input normalisation: from scratch or from ``cfg.start_from``, then
    ternarized as ``cfg.method`` asks.  ``num_classes`` is the data's (ImageNet folders: their class count)."""
    cfg.validate()
    if cfg.start_from is not None and not Path(cfg.start_from).is_file():
        raise FileNotFoundError(f"--start-from {cfg.start_from} does not exist; give a checkpoint such as "
                                "../shared/pretrained/resnet20-12fca82f.th or a results/ model")
    if cfg.dataset == "imagenet":
        model, meta = _build_imagenet(cfg, num_classes)
    elif cfg.start_from is None:
        model, meta = build_model(cfg.model), {"mean": list(CIFAR10_MEAN), "std": list(CIFAR10_STD)}
    else:
        model, meta = load_model(cfg.start_from, cfg.model)
        check_against_checkpoint(cfg, meta)
        meta = {"mean": meta["mean"], "std": meta["std"]}
    already = any(isinstance(m, TernaryMixin) for m in model.modules())
    if cfg.method != "fp" and not already:
        ternarize_model(model, method=cfg.method, t=cfg.t, sparsity=cfg.sparsity,
                        keep_first=cfg.keep_first, keep_last=cfg.keep_last, scale_init=cfg.scale_init)
    return model, meta
