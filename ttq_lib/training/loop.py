"""The training loop: config -> inputs (a :class:`~ttq_lib.training.tasks.Task`) -> model -> optimizer -> for each
epoch: train, evaluate, commit.

After every epoch one history line (:mod:`ttq_lib.training.history`) and a checkpoint are written atomically,
so a killed run resumes exactly where it stopped.  What a run folder holds, in the order an epoch writes it:
``last.safetensors`` (the weights), ``history.jsonl``, then ``state.pt`` (optimizer state and epoch): the commit
point.  A run killed before ``state.pt`` is written redoes that epoch on ``--resume``; ``metrics.json`` appears
only when the last epoch is committed, so a folder without it is never taken for a finished run.  A folder
that holds a run is never trained into again unless the caller says ``resume`` or ``overwrite``.

A training step reads nothing back from the device: the loss and the count of correct answers are summed
there and read every ``log_every`` steps (for the progress bar, and to stop a diverged run) and at the end of
the epoch, so on a GPU the host queues steps ahead instead of waiting for each one.
"""
from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn as nn
from tqdm.auto import tqdm

from ..convert import layer_stats
from ..formats import load_model, load_training_state, save_checkpoint, save_training_state, write_text_atomic
from . import distributed
from .config import TrainConfig, default_channels_last, save_config, uses_cudagraphs
from .devices import device_label, resolve_device  # noqa: F401  (re-exported: the package's names for them)
from .history import read_history, weight_histograms
from .hooks import RunHooks
from .metrics import write_metrics
from .optim import make_optimizer, param_groups, set_learning_rates  # noqa: F401  (re-exported)
from .provenance import provenance
from .run_folder import check_run_folder, held_run_files
from .seeds import seed_epoch
from .start_model import build
from .step import read_loss, train_step
from .tasks import Task, open_task


@dataclass
class Run:
    """What every epoch of one run uses: its config, task and folder, the model (``net`` is what the steps call:
    the model, or DDP / torch.compile around it; ``saved`` what the checkpoint holds), optimizer and hooks."""
    cfg: TrainConfig
    task: Task
    out: Path
    model: nn.Module
    net: nn.Module
    saved: nn.Module
    opt: torch.optim.Optimizer
    channels_last: bool
    hooks: RunHooks
    progress: bool
    meta: dict
    history: list


def train(cfg: TrainConfig, resume: bool = False, progress: bool = True, data=None,
          overwrite: bool = False, hooks: RunHooks | None = None) -> dict:
    """Run (or resume) one training run in ``cfg.out``; returns the metrics written to metrics.json.

    A folder that already holds a run is refused unless ``resume`` (continue it from its last committed
    epoch; a finished run is left as it is) or ``overwrite`` (delete its run files first).  Nothing is
    written or deleted until the model and the data have loaded, so a refused or failed start leaves the
    folder as it was.  ``data`` may pass the task's data already loaded (one copy for several runs);
    ``hooks`` connect the run to a supervisor (:mod:`ttq_lib.training.hooks`: thread hints, progress, the kill
    tests' fault points).
    """
    cfg.validate()
    check_run_folder(Path(cfg.out), resume, overwrite)
    if resume and (finished := _finished(cfg)) is not None:
        return finished
    task = open_task(cfg, data)  # checked, and this process's place in the run, before anything is written
    info = task.info
    hooks = (hooks or RunHooks()).for_rank(info.rank)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    origin = provenance()  # the code that runs is the code at start, whatever is committed meanwhile
    if info.device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input shapes: let cuDNN pick its fastest kernels
    torch.manual_seed(cfg.seed)
    # None (the default) stays None in config.json: the layout is the device's, so a plan started on one
    # machine can be continued on another; a resume on the same kind of device picks the same layout.
    channels_last = default_channels_last(info.device.type) if cfg.channels_last is None else cfg.channels_last
    run, start_epoch, wall_before = _start_or_resume(cfg, task, resume, channels_last, hooks, progress and info.main)
    t0 = time.time()
    for epoch in range(start_epoch, cfg.epochs):
        row = _epoch(run, epoch)
        if info.main:
            row["wall_time_s"] = wall_before + time.time() - t0
            _commit(run, epoch, row)
        distributed.barrier(info)  # the epoch is committed before any process starts the next one
    distributed.barrier(info)  # the last epoch is committed before any process reports the run finished
    if not info.main:
        return {}
    return write_metrics(cfg, task, run.history, run.out / "last.safetensors", channels_last, origin)


def _finished(cfg: TrainConfig) -> dict | None:
    """The metrics of a run that is already finished (``--resume`` then does nothing), else None."""
    out = Path(cfg.out)
    metrics_path = out / "metrics.json"
    if not (metrics_path.exists() and len(read_history(out)) >= cfg.epochs):
        return None
    if distributed.launched_by_torchrun() and int(os.environ["RANK"]) != 0:
        return {}  # rank 0 reports it, once
    metrics = json.loads(metrics_path.read_text())
    split = metrics.get("eval_split", "test")
    print(f"{out}: this run is already finished ({cfg.epochs} of {cfg.epochs} epochs, {split} accuracy "
          f"{metrics.get(f'{split}_accuracy')} %); nothing to do", file=sys.stderr)
    return metrics


def _start_or_resume(cfg: TrainConfig, task: Task, resume: bool, channels_last: bool, hooks: RunHooks,
                     progress: bool) -> tuple[Run, int, float]:
    """The model, optimizer and batches, from the run's last committed epoch or from the start; only once all
    have loaded (in every process) is the folder touched, by rank 0 alone.  Returns the run, the first epoch
    to train and the wall time of the epochs before it."""
    out, info = Path(cfg.out), task.info
    state_path, last_path = out / "state.pt", out / "last.safetensors"
    committed = resume and state_path.exists() and last_path.exists()
    if committed:
        # The run's own checkpoint rebuilds the model: the file it started from may be gone or elsewhere.
        model, norm = load_model(last_path, task.arch())
        norm = {"mean": norm["mean"], "std": norm["std"]}
    else:
        model, norm = build(cfg, task.num_classes)
    model.to(info.device)
    if channels_last:  # before the optimizer exists, so its momentum buffers take the same layout
        model.to(memory_format=torch.channels_last)
    opt = make_optimizer(model, cfg)
    task.load(norm)

    distributed.barrier(info)
    start_epoch, wall_before = 0, 0.0
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        if (out / "metrics.json").exists():  # stale (or --overwrite): a run that goes on is not finished
            (out / "metrics.json").unlink()
    if committed:
        state = load_training_state(state_path, info.device)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        start_epoch, wall_before = int(state["epoch"]) + 1, float(state["wall_time_s"])
    elif info.main:  # a new run, or one whose first epoch was never committed (no state.pt): start from epoch 0
        if resume and read_history(out):
            print(f"{out}: no state.pt, so no epoch was committed; starting again from epoch 0 (the run is "
                  "deterministic: it ends where an uninterrupted one would)", file=sys.stderr)
        for name in held_run_files(out):  # --overwrite, or leftovers of an uncommitted first epoch
            (out / name).unlink()
        save_config(cfg, out)
        write_text_atomic(out / "history.jsonl", "")

    net = distributed.wrap(model, info, cfg.sync_bn)  # DDP (and SyncBatchNorm) when asked; else model
    saved = distributed.plain_batchnorm_view(model) if cfg.sync_bn else model  # what the checkpoint holds
    net = torch.compile(net, mode=cfg.compile_mode) if cfg.compile else net  # model's parameters; model is saved
    history = read_history(out)[:start_epoch] if info.main else []
    run = Run(cfg, task, out, model, net, saved, opt, channels_last, hooks, progress,
              {**norm, **task.checkpoint_meta()}, history)
    return run, start_epoch, wall_before


def _epoch(run: Run, epoch: int) -> dict:
    """Train one epoch and evaluate: the epoch's history row (less its wall time, which the caller adds)."""
    cfg, task, info, hooks = run.cfg, run.task, run.task.info, run.hooks
    device = info.device
    hooks.fault("epoch-start", info.rank)
    seed_epoch(cfg.seed, epoch, info.rank)
    steps = len(task)
    threads = hooks.epoch_start(epoch, cfg.epochs, steps)  # a runner may have freed or taken cores
    run.model.train()
    task.set_epoch(epoch)
    # float64 sums of per-batch float32 losses: the same numbers the earlier per-step loss.item() summed
    sums = [torch.zeros((), dtype=torch.float32 if device.type == "mps" else torch.float64, device=device),
            torch.zeros((), dtype=torch.int64, device=device)]
    seen, t_epoch = 0, time.time()
    cudagraphs, bf16 = cfg.compile and uses_cudagraphs(cfg.compile_mode), cfg.precision == "bf16"
    bar = tqdm(task, total=steps, desc=f"epoch {epoch + 1}/{cfg.epochs}", disable=not run.progress, leave=False)
    for step, (x, y) in enumerate(bar):
        lr = set_learning_rates(run.opt, cfg, epoch, step, steps)
        seen += train_step(run.net, run.model, run.opt, x, y, sums, bf16, run.channels_last, cudagraphs)
        hooks.step(step)
        if run.progress and step % cfg.log_every == 0:
            mean_loss = read_loss(sums[0], seen, epoch, step)
            bar.set_postfix(loss=f"{mean_loss:.3f}", acc=f"{100 * int(sums[1]) / seen:.1f}", lr=f"{lr:.4g}")
    if info.active:  # the whole global batch's figures, in every process
        seen_t = torch.tensor(seen, dtype=torch.int64, device=device)
        distributed.all_sum(info, sums[0], sums[1], seen_t)
        seen = int(seen_t)
    train_loss = read_loss(sums[0], seen, epoch, steps - 1)  # a sync: the steps have run
    t_train = time.time()
    hooks.evaluating()
    accs = task.evaluate(run.model, run.channels_last)
    if not info.main:
        return {}
    return {"epoch": epoch + 1, "lr": lr, "train_loss": train_loss, "train_acc": 100 * int(sums[1]) / seen,
            **accs, "eval_split": task.split, "wall_time_s": None,
            "train_time_s": t_train - t_epoch, "eval_time_s": time.time() - t_train,  # this epoch's
            "device": device_label(device), "threads": threads,
            "layers": layer_stats(run.model), "hist": weight_histograms(run.model)}


def _commit(run: Run, epoch: int, row: dict) -> None:
    """Write the epoch: weights, history, then state.pt, the commit point (a run killed before it is written
    redoes the epoch)."""
    out, hooks = run.out, run.hooks
    run.history.append(row)
    save_checkpoint(out / "last.safetensors", run.saved, {**run.meta, "epoch": epoch + 1})
    hooks.fault("after-checkpoint")
    write_text_atomic(out / "history.jsonl", "".join(json.dumps(r) + "\n" for r in run.history))
    hooks.fault("after-history")
    save_training_state(out / "state.pt", run.model, run.opt, epoch, row["wall_time_s"])
    hooks.fault("after-state")
    if run.progress:
        split = run.task.split
        tqdm.write(f"epoch {epoch + 1}/{run.cfg.epochs}  loss {row['train_loss']:.4f}  "
                   f"train {row['train_acc']:.2f}%  {split} {row[f'{split}_acc']:.2f}%  lr {row['lr']:.4g}")
