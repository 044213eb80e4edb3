"""The training loop: one process or many (torchrun), atomic checkpoints every epoch and on Ctrl-C, exact resume,
divergence detection, metrics files."""

from __future__ import annotations

import contextlib
import math
import os
import random
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from ..data import Batch, SkipLog
from ..errors import RunFolderError, TrainingDiverged
from ..models import save_weights
from ..plumbing import output_lock, resolve_device, write_csv, write_json, write_text
from .checkpoint import never_checkpointed, read_run_checkpoint
from .config import CHECKPOINT, TrainConfig, build_model, model_metadata
from .distributed import any_rank, dist_info, use_global_batchnorm
from .card import model_card
from .evaluation import evaluate_accuracy, final_evaluation
from .result import EpochMetrics, TrainResult
from .transfer import (WithEvidenceL1, batchnorm_hint, classifier, freeze, frozen_prefixes, hold_frozen, initial_model,
                       load_initial, parameter_groups, precise_bn, precise_bn_note, resolve_init)
from .splits import check_layout, class_balance, epoch_loader, make_splits, mix_batch

class _Interrupted(Exception):
    pass


def lr_at(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Linear warm-up, then cosine decay to zero, as a function of the global step."""
    total = config.epochs * steps_per_epoch
    warm = int(config.warmup_epochs * steps_per_epoch)
    if step < warm:
        return config.lr * (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return config.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def _optimizer(config: TrainConfig, model: nn.Module, new: frozenset[str] = frozenset()) -> torch.optim.Optimizer:
    """AdamW or SGD over the trainable parameters: no weight decay on biases and norm parameters; with --init, the
    pretrained ones at ``pretrained_lr_mult`` times the rate of the ``new`` ones (their group's ``lr_scale``)."""
    groups = parameter_groups(model, config, set(new))
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=True)
    return torch.optim.AdamW(groups, lr=config.lr)


def train(
    config: TrainConfig,
    resume: bool = False,
    progress: bool = True,
    log: Optional[Callable[[str], None]] = None,
    stop_after_steps: Optional[int] = None,
    command: Optional[str] = None,
) -> TrainResult:
    """Train the model ``config`` describes; resume from ``out/checkpoint.pt`` when ``resume`` is set.

    ``stop_after_steps`` interrupts the run after that many optimiser steps as Ctrl-C would (for tests);
    ``command`` (the command line that started it) is recorded in summary.json. A second process training into the
    same folder fails at once (:class:`bagnet.plumbing.OutputBusyError`); a run whose loss or weights become
    non-finite stops with :class:`bagnet.errors.TrainingDiverged`, keeping its last checkpoint and saving no model.
    """
    rank = dist_info()[0]
    initial = load_initial(config.init) if config.init else None  # loaded once: read here, trained from in _setup
    config = resolve_init(config, initial)  # architecture and resolution of --init's model (contradiction: ConfigError)
    check_layout(config)  # data that does not fit its split flags: an error before the run folder exists
    # a resumed run's checkpoint is read and checked once, before the lock would create the folder
    state = None
    if resume and never_checkpointed(Path(config.out)):
        (log or (lambda msg: print(msg, file=sys.stderr)))(
            f"--resume: {config.out} stopped before its first checkpoint; starting the run again from the beginning")
    elif resume:
        state = read_run_checkpoint(Path(config.out) / CHECKPOINT, config)
    if rank != 0:
        return _train(config, state, progress, log, stop_after_steps, command, initial)
    with output_lock(config.out):
        return _train(config, state, progress, log, stop_after_steps, command, initial)


@dataclass
class _Run:
    """Everything one training run holds while it runs (set up by :func:`_setup`, advanced by :func:`_epoch`)."""

    config: TrainConfig
    rank: int
    world: int
    device: torch.device
    out: Path
    say: Callable[[str], None]
    splits: Any
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    amp_dtype: Optional[torch.dtype]
    steps_per_epoch: int
    skips: SkipLog
    loss_fn: nn.Module
    frozen: list[nn.Module] = field(default_factory=list)  # kept in eval mode while training
    penalty: Optional[WithEvidenceL1] = None  # the evidence-L1 wrapper (evidence_l1 > 0)
    init: Optional[str] = None  # what the run kept of --init's model
    sample_weights: Optional[torch.Tensor] = None  # balanced_sampler: each training image's draw weight
    history: list[EpochMetrics] = field(default_factory=list)
    start_epoch: int = 0
    start_step: int = 0
    wall_before: float = 0.0
    resume_stats: Optional[tuple] = None
    commands: list[str] = field(default_factory=list)
    started: float = field(default_factory=time.time)
    steps_done: int = 0
    interrupted: bool = False
    hinted: bool = False  # the BatchNorm hint is said once a run

    @property
    def distributed(self) -> bool:
        return self.world > 1

    @property
    def checkpoint_path(self) -> Path:
        return self.out / CHECKPOINT


def _train(config: TrainConfig, state: Optional[dict[str, Any]], progress: bool,
           log: Optional[Callable[[str], None]], stop_after_steps: Optional[int], command: Optional[str],
           initial: Optional[nn.Module] = None) -> TrainResult:
    run = _setup(config, resume=state is not None, log=log, initial=initial)
    if state is not None:
        _restore(run, state)
    run.net = compiled(run.net, config)
    if command:
        run.commands.append(command)
    run.started = time.time()
    previous_handler = None
    if run.rank == 0 and threading.current_thread() is threading.main_thread():
        previous_handler = signal.getsignal(signal.SIGINT)
        signal.signal(signal.SIGINT, lambda *_: setattr(run, "interrupted", True))
    completed, diverged = False, None
    try:
        for epoch in range(run.start_epoch, config.epochs):
            _epoch(run, epoch, progress, stop_after_steps)
        completed = True
    except (_Interrupted, KeyboardInterrupt):
        run.say(f"interrupted: checkpoint saved to {run.checkpoint_path}; continue with --resume")
    except TrainingDiverged as err:
        diverged = err
    finally:
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
    return _finish(run, completed, diverged)


def _setup(config: TrainConfig, resume: bool, log: Optional[Callable[[str], None]],
           initial: Optional[nn.Module] = None) -> _Run:
    """The device, the run folder (checked before anything in it is written), the seeds, data, model and optimiser."""
    rank, world, local_rank = dist_info()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    say = log if rank == 0 else (lambda msg: None)
    device = resolve_device(config.device or "auto")
    if device.type == "cuda" and device.index is None:  # each torchrun process on its own GPU
        device = torch.device("cuda", local_rank if world > 1 else 0)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    say(f"training on {device}" + (f" ({world} processes)" if world > 1 else ""))
    out = Path(config.out)
    ckpt_path = out / CHECKPOINT
    if not resume and rank == 0 and ckpt_path.exists():
        raise FileExistsError(f"{ckpt_path} exists: pass --resume to continue that run, or choose another --out")
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(OSError):  # a checkpoint write that failed (a full disk) leaves its temporary file
            ckpt_path.with_name(ckpt_path.name + ".tmp").unlink()
        if not resume:
            config.save(out / "config.yaml")
    torch.manual_seed(config.seed)
    random.seed(config.seed)
    np.random.seed(config.seed)
    splits = make_splits(config)
    new: frozenset[str] = frozenset()
    init = None
    if config.init:
        model, report = initial_model(config, splits.categories, initial)
        init = report.describe()
        say(init)
        if report.new:
            new = frozenset(f"{report.classifier}.{n}" for n, _ in classifier(model)[1].named_parameters())
    else:
        model = build_model(config, len(splits.categories))
    frozen = freeze(model, frozen_prefixes(model, config.freeze_stages))
    if note := precise_bn_note(model, frozen, config):
        say(note)
    model = model.to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = _optimizer(config, model, new)
    amp_dtype = autocast_dtype(device) if config.amp else None
    steps_per_epoch = len(splits.train) // config.batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"{len(splits.train)} training images give no full batch of {config.batch_size}")
    penalty = WithEvidenceL1(model) if config.evidence_l1 > 0 else None
    net: nn.Module = penalty or model
    if world > 1:
        if config.sync_bn:
            use_global_batchnorm(model, device)
        net = nn.parallel.DistributedDataParallel(net, device_ids=[device.index] if device.type == "cuda" else None,
                                                  broadcast_buffers=not config.sync_bn)
    return _Run(config, rank, world, device, out, say, splits, model, net, optimizer,
                torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16), amp_dtype, steps_per_epoch,
                SkipLog(say), _loss(config, splits, device), frozen, penalty, init,
                sample_weights=class_balance(splits)[1] if config.balanced_sampler else None)


def _loss(config: TrainConfig, splits: Any, device: torch.device) -> nn.Module:
    """Cross-entropy with label smoothing, weighted per class when ``class_weights`` is set."""
    weight = class_balance(splits)[0].to(device) if config.class_weights else None
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)


def _restore(run: _Run, state: dict[str, Any]) -> None:
    """Continue from a checkpoint: weights, optimiser, loss scale and random state, then where and how far it was."""
    try:
        run.model.load_state_dict(state["model"])
        run.optimizer.load_state_dict(state["optimizer"])
        run.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["torch_rng"])
    except (RuntimeError, KeyError, TypeError, ValueError) as err:
        raise RunFolderError(f"{run.checkpoint_path} does not fit the model and optimiser of {run.out / 'config.yaml'} "
                             f"({type(err).__name__}: {str(err)[:300]}); restore the run's own checkpoint, or "
                             f"start over in another --out") from None
    run.start_epoch, run.start_step = state["epoch"], state["step_in_epoch"]
    run.history = [EpochMetrics(**h) for h in state["history"]]
    run.wall_before = state["wall_seconds"]
    run.skips.paths.update(dict(state.get("skipped", {})))
    run.resume_stats = state.get("epoch_stats")
    run.commands = list(state.get("commands", []))
    run.say(f"resuming {run.out} at epoch {run.start_epoch + 1}, step {run.start_step}/{run.steps_per_epoch}")


def _epoch(run: _Run, epoch: int, progress: bool, stop_after_steps: Optional[int]) -> None:
    """One epoch: its seeded batches (from where a resumed run stopped), the steps, then the epoch's checks, metrics
    and checkpoint. Raises :class:`_Interrupted` after checkpointing when asked to stop."""
    config = run.config
    skip = run.start_step if epoch == run.start_epoch else 0
    loader = epoch_loader(run.splits.train, config, epoch, run.rank, run.world, skip, run.sample_weights)
    run.net.train()
    hold_frozen(run.model, run.frozen, config.freeze_bn)
    epoch_start, seen, loss_sum, correct, l1_sum = time.time(), 0, 0.0, 0, 0.0
    if skip and run.resume_stats:
        loss_sum, correct, seen, elapsed, *rest = run.resume_stats
        l1_sum = rest[0] if rest else 0.0
        epoch_start -= elapsed
    bar = _bar(len(loader), f"epoch {epoch + 1}/{config.epochs}", progress and run.rank == 0)
    for step, batch in enumerate(loader, start=skip):
        run.skips.add(batch.skipped)
        global_step = epoch * run.steps_per_epoch + step
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(config, global_step, run.steps_per_epoch) * group.get("lr_scale", 1.0)
        mix_rng = np.random.default_rng([config.seed, global_step, run.rank])
        loss, n_correct, n = train_step(run.net, batch, run.loss_fn, run.optimizer, run.scaler, run.device,
                                         run.amp_dtype, config.channels_last, config, mix_rng)
        _check_finite_loss(run, loss, epoch, step)
        seen, loss_sum, correct = seen + n, loss_sum + loss * n, correct + n_correct
        l1_sum += run.penalty.last * n if run.penalty is not None else 0.0
        bar.update(1)
        bar.set_postfix(loss=f"{loss_sum / max(seen, 1):.3f}", acc=f"{correct / max(seen, 1):.3f}",
                        img_s=f"{seen * run.world / (time.time() - epoch_start):.0f}")
        run.steps_done += 1
        if stop_after_steps is not None and run.steps_done >= stop_after_steps:
            run.interrupted = True
        if any_rank(run.interrupted, run.distributed, run.device):
            _checkpoint(run, epoch, step + 1, (loss_sum, correct, seen, time.time() - epoch_start, l1_sum))
            raise _Interrupted()
    bar.close()
    precise_bn(run.model, run.splits.train, config, epoch, run.device, run.rank, run.world)
    _end_epoch(run, epoch, (loss_sum, correct, seen, l1_sum), time.time() - epoch_start)


def _end_epoch(run: _Run, epoch: int, sums: tuple[float, int, int, float], seconds: float) -> None:
    """After an epoch's last step: finite weights on every rank, validation (rank 0), metrics and the checkpoint."""
    config, model = run.config, run.model
    stats = torch.tensor(sums, dtype=torch.float64, device=run.device)
    if run.distributed:
        dist.all_reduce(stats)
    broken = [n for n, p in model.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if any_rank(bool(broken), run.distributed, run.device):
        raise TrainingDiverged(f"training diverged: non-finite weights ({', '.join(broken[:3])}) after epoch "
                               f"{epoch + 1}; the checkpoint {run.checkpoint_path} of the last finite epoch is kept "
                               f"and no model was saved. Lower the learning rate (--lr, now {config.lr:g})")
    val = evaluate_accuracy(model, run.splits.val, config, run.device) if run.rank == 0 else (0.0, 0.0)
    held = (evaluate_accuracy(model, run.splits.holdout, config, run.device)[0]
            if run.splits.holdout and run.rank == 0 else None)
    run.history.append(EpochMetrics(
        epoch=epoch + 1, train_loss=float(stats[0] / max(stats[2], 1)), train_top1=float(stats[1] / max(stats[2], 1)),
        images_per_s=float(stats[2]) / seconds,
        lr=lr_at(config, (epoch + 1) * run.steps_per_epoch - 1, run.steps_per_epoch),
        val_top1=val[0], val_top5=val[1], holdout_top1=held, skipped_total=len(run.skips), seconds=seconds,
        evidence_l1=float(stats[3] / max(stats[2], 1)) if run.penalty is not None else None,
    ))
    _checkpoint(run, epoch + 1, 0)
    if run.rank == 0:
        _write_metrics(run.out, run.history)
        h = run.history[-1]
        run.say(f"epoch {h.epoch}: loss {h.train_loss:.3f} train {h.train_top1:.3f} val top-1 {h.val_top1:.3f} "
                f"top-5 {h.val_top5:.3f}" + (f" holdout {h.holdout_top1:.3f}" if h.holdout_top1 is not None else "")
                + (f" mean |evidence| {h.evidence_l1:.4f}" if h.evidence_l1 is not None else "")
                + f" ({h.images_per_s:.0f} img/s)")
        if not run.hinted and (hint := batchnorm_hint(h, len(run.splits.categories), config, model)):
            run.say(hint)
            run.hinted = True
    if run.distributed:
        dist.barrier()


def _check_finite_loss(run: _Run, loss: float, epoch: int, step: int) -> None:
    if any_rank(not math.isfinite(loss), run.distributed, run.device):
        last = (f"the last checkpoint, {run.checkpoint_path}, written before the loss broke, is kept"
                if run.checkpoint_path.exists() else "no checkpoint had been written yet")
        raise TrainingDiverged(
            f"training diverged: the loss became {loss} at epoch {epoch + 1}, step {step + 1}; {last}; no model "
            f"was saved. Lower the learning rate (--lr, now {run.config.lr:g}) or the warm-up (--warmup-epochs), "
            f"then start a new run (--out)")


def _checkpoint(run: _Run, epoch: int, step_in_epoch: int, epoch_stats: Optional[tuple] = None) -> None:
    """Rank 0 writes the checkpoint atomically (a temporary file renamed; on a full disk nothing partial stays)."""
    if run.rank != 0:
        return
    state = {
        "config": run.config.to_dict(), "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scaler": run.scaler.state_dict(), "torch_rng": torch.get_rng_state(), "epoch": epoch,
        "step_in_epoch": step_in_epoch, "history": [asdict(h) for h in run.history],
        "wall_seconds": run.wall_before + time.time() - run.started, "skipped": dict(run.skips.paths),
        "epoch_stats": epoch_stats, "commands": run.commands,
    }
    tmp = run.checkpoint_path.with_name(run.checkpoint_path.name + ".tmp")
    try:
        torch.save(state, tmp)
        os.replace(tmp, run.checkpoint_path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def _finish(run: _Run, completed: bool, diverged: Optional[TrainingDiverged]) -> TrainResult:
    """The model file (a completed run only), summary.json and the list of skipped images; a divergence re-raised."""
    weights, evaluation = None, {}
    if completed and run.rank == 0:
        weights = save_weights(run.model, run.out / "model.safetensors",
                               model_metadata(run.config, run.splits.categories))
        evaluation = final_evaluation(run.model, run.splits, run.config, run.device, run.say)
    result = TrainResult(run.out, run.config, run.history, weights, len(run.skips),
                         run.wall_before + time.time() - run.started, completed, run.commands,
                         stopped=None if diverged is None else str(diverged), evaluation=evaluation, init=run.init)
    if run.rank == 0:
        result.save(run.out)  # summary.json, metrics.csv, curves.png (the run's lock is re-entrant)
        if completed:
            write_text(run.out / "model.md", model_card(result, run.splits))
        if run.skips.paths:
            run.say(f"{len(run.skips)} unreadable images were skipped (listed in {run.out / 'summary.json'})")
            write_text(run.out / "skipped.txt", "".join(f"{p}\t{r}\n" for p, r in run.skips.paths.items()))
    if diverged is not None:
        raise diverged
    return result


def autocast_dtype(device: torch.device) -> Optional[torch.dtype]:
    """The mixed-precision type this hardware trains well in: fp16 (with loss scaling) or bf16 on CUDA, bf16 on
    CPUs with AVX-512 BF16 (1.5× faster training here, benchmarks/train.py), else None (fp32)."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu":
        check = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
        return torch.bfloat16 if check is not None and check() else None
    return None


def compiled(net: nn.Module, config: TrainConfig) -> nn.Module:
    """``net`` wrapped by ``torch.compile`` when ``config.compile`` is set, else ``net`` itself.

    The wrapper shares ``net``'s parameters and buffers, so checkpoints are written from ``net`` unchanged. Training
    batches all have one shape (only full batches are used), so the graph is compiled once, on the first step."""
    if not config.compile:
        return net
    return torch.compile(net)


def train_step(net: nn.Module, batch: Batch, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
                scaler: torch.amp.GradScaler, device: torch.device, amp_dtype: Optional[torch.dtype],
                channels_last: bool, config: Optional[TrainConfig] = None,
                mix_rng: Optional[np.random.Generator] = None) -> tuple[float, int, int]:
    """One optimiser step on ``batch`` exactly as ``bagnet train`` takes it (the benchmarks time this function):
    mixing, channels-last, autocast, backward, step; returns (loss, correct, images)."""
    if len(batch) == 0:
        return 0.0, 0, 0
    images = batch.images.to(device, non_blocking=True)
    labels = batch.labels.to(device, non_blocking=True)
    perm, lam = None, 1.0
    if config is not None and mix_rng is not None:
        images, perm, lam = mix_batch(images, config.mixup, config.cutmix, mix_rng)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
        out = net(images)
        logits, l1 = out if isinstance(out, tuple) else (out, None)  # (logits, mean |evidence|): evidence_l1 > 0
        loss = loss_fn(logits, labels)
        if perm is not None:
            loss = lam * loss + (1 - lam) * loss_fn(logits, labels[perm])
        if l1 is not None and config is not None:
            loss = loss + config.evidence_l1 * l1
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(loss.detach()), int((logits.argmax(1) == labels).sum()), int(labels.shape[0])


def _write_metrics(out: Path, history: list[EpochMetrics]) -> None:
    rows = [asdict(h) for h in history]
    write_json(out / "metrics.json", rows)
    write_csv(out / "metrics.csv", rows)
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional
        return
    writer = SummaryWriter(str(out / "tensorboard"))
    h = history[-1]
    for key, value in asdict(h).items():
        if key != "epoch" and value is not None:
            writer.add_scalar(key, value, h.epoch)
    writer.close()


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="batch", disable=not enabled, leave=False)
