"""The training engine behind ``dgconv train``: one process or ``torchrun`` DDP, checkpoints, metrics, resume.

The loop knows nothing of DGConv beyond "multiply the loss by the resource constraint" and "ask the constraint
about the groups"; what a run writes and how (the run directory, its lock, crash recovery) belongs to
:mod:`dgconv.train.rundir`. A run killed at any moment resumes with ``--resume RUN_DIR`` from its last completed epoch,
writing to RUN_DIR; batch order and augmentation are functions of ``(seed, epoch, rank)``, so on the CPU the
resumed run ends bit-identical to an uninterrupted one.

Console output goes through :mod:`logging` (logger ``dgconv.train.engine``); ``dgconv train`` shows it on standard
output. Only the main process logs.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .._env import auto_threads, cpu_name, source_commit
from .._version import __version__
from ..errors import ConfigError, Interrupted, TrainingError
from ..convert.freeze import freeze_groups, frozen_structure, structure_record
from ..layer.conv import cached_gates, gate_gradients
from ..models import model_info
from . import interrupts
from .checkpoint import Contents, build_checkpoint, contents
from .config import TrainConfig, merge_resume
from .distributed import (
    DistEnv,
    all_reduce_sum,
    init_distributed,
    lost_peer,
    lost_rank_message,
    shutdown,
)
from .progress import Progress, duration, plural
from .rundir import RunWriter
from .schedule import lr_at
from .summary import budget_text, command, final_summary
from .runs import LAST, checkpoint_path, groups_document, is_dgconv_run, load_run, read_metrics
from .runs import default_run_dir
from .setup import Lookahead, RunState, setup, take_skipped, wrap
from .tta import tta_logits

__all__ = ["train", "evaluate", "resumed_config"]

_logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ helpers
@torch.no_grad()
def evaluate(model: nn.Module, loader: Any, amp: bool = False, progress: Progress | None = None,
             tta: str = "none") -> tuple[float, float]:
    """``(mean loss, accuracy)`` of ``model`` over a loader's test split, summed over all processes; ``tta``: the
    views averaged (:mod:`dgconv.train.tta`)."""
    was = model.training
    model.eval()
    dev = next(model.parameters()).device
    sums = torch.zeros(3, dtype=torch.float64, device=dev)
    bar = progress or Progress(False)
    try:
        with bar.phase("eval", len(loader), getattr(loader, "batch_size", 1), getattr(loader, "size", None)) as update:
            for x, y in loader.epoch(0):
                with cached_gates(model), torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
                    out = model(x)
                    if tta != "none":
                        out = tta_logits(model, x, out, tta)
                sums[0] += F.cross_entropy(out.float(), y, reduction="sum")
                sums[1] += (out.argmax(1) == y).sum()
                sums[2] += len(y)
                update(1, images=len(y))
    finally:
        model.train(was)
    all_reduce_sum(sums)
    n = max(1.0, sums[2].item())
    return sums[0].item() / n, sums[1].item() / n


def _environment(env: DistEnv) -> dict[str, Any]:
    return {
        "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "dgconv": __version__,
        "commit": source_commit(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "device": str(env.device),
        "device_name": torch.cuda.get_device_name(env.device) if env.device.type == "cuda" else cpu_name(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "world_size": env.world_size,
        "argv": sys.argv,
    }


# ------------------------------------------------------------------------------------------ train
def train(cfg: TrainConfig, explicit: set[str] | None = None) -> dict[str, Any]:
    """Run a training job; returns the last epoch's metrics record.

    ``explicit`` names the fields the user set (the CLI passes them) so that ``--resume`` can refuse
    conflicting options instead of silently ignoring them.

    ``--resume`` takes a run directory (or a checkpoint file inside one) and always writes to that directory;
    the path recorded in the checkpoint is informational only. A run that already finished its epochs is left
    as it is (the message says how to extend it).

    Raises:
        ConfigError, DataError, CheckpointError, RunDirError, TrainingError: bad input or a run that cannot go
            on; the message says why and what was kept.
        Interrupted: SIGINT/SIGTERM (when :func:`dgconv.train.interrupts.install` routed them), after the current
            file write finished; ``detail`` names the checkpoint to resume from.
    """
    explicit = set() if explicit is None else explicit
    cfg, ckpt = resumed_config(cfg, explicit)
    if ckpt is not None and ckpt.epoch >= cfg.epochs:
        return _already_finished(cfg, ckpt)
    interrupts.check()
    if cfg.threads is None and ckpt is not None:  # a run from before --threads: resume it as it ran
        recorded = load_run(cfg.out).environment.get("threads") if is_dgconv_run(cfg.out) else None
        cfg.threads = recorded if isinstance(recorded, int) and recorded > 0 else None
    if cfg.threads is None and cfg.device != "cuda":  # chosen once and recorded, so that config.json replays the run
        size = model_info(cfg.model).input_size if cfg.image_size is None else (3, cfg.image_size, cfg.image_size)
        cfg.threads = auto_threads(tuple(size))
    if cfg.threads is not None:  # before anything runs: CPU results can depend on the thread count
        torch.set_num_threads(cfg.threads)
    if cfg.device == "cuda" and not torch.cuda.is_available():
        built = f"torch {torch.__version__} " + ("has CUDA but sees no GPU" if torch.backends.cuda.is_built() else
                                                 "is a CPU-only build")
        raise ConfigError(f"--device cuda: no CUDA device here ({built}); train with --device cpu, or leave --device "
                          f"out to use a GPU when there is one")
    env = init_distributed(cfg.device)
    finished = False
    try:
        writer = RunWriter(cfg.out) if env.is_main else None
        try:
            record = _train(cfg, env, writer, ckpt)
            finished = True
            return record
        except Interrupted as e:
            if not e.detail:  # stopped before the epoch loop (loading data, building the model)
                e.detail = f"run {cfg.out} had not started an epoch; nothing was kept"
            raise
        except RuntimeError as e:
            if env.distributed and lost_peer(e):  # a rank died (killed, out of memory): say so, not gloo's traceback
                checkpoint = writer.last if writer is not None and writer.has_checkpoint() else None
                raise TrainingError(lost_rank_message(env, str(cfg.out), checkpoint)) from None
            raise
        finally:
            if writer is not None:  # a run that committed no epoch leaves nothing behind
                writer.close(discard=not finished)
    finally:
        shutdown(barrier=finished)


def resumed_config(cfg: TrainConfig, explicit: set[str]) -> tuple[TrainConfig, Contents | None]:
    """The resolved configuration a run will train with, and its checkpoint's contents when ``cfg.resume`` names
    one: the saved options, with the few a resumed run may change taken from ``cfg`` (what ``--print-config``
    shows beside ``--resume``).

    Raises:
        ConfigError, CheckpointError: what :func:`train` raises for the same options.
    """
    ckpt = None
    if cfg.resume is not None:
        source = checkpoint_path(cfg.resume)
        run_dir = source.parent
        if "out" in explicit and cfg.out is not None and Path(cfg.out).resolve() != run_dir.resolve():
            raise ConfigError(
                f"--resume continues the run in {run_dir} and writes there; --out {cfg.out} names another directory "
                f"(to branch a run, copy its directory first and resume the copy)"
            )
        if not source.exists() and run_dir.is_dir() and not any(run_dir.glob("*.pt")):
            raise ConfigError(
                f"--resume {cfg.resume}: {run_dir} has no checkpoint: the run stopped before it finished its first "
                f"epoch, so there is nothing to resume. Start it again with the same options (--out {run_dir} "
                f"works: a run that never finished an epoch leaves nothing behind)"
            )
        ckpt = contents(source)
        if not is_dgconv_run(run_dir):  # nothing in a folder that is not a run is ours to write or delete
            raise ConfigError(
                f"--resume {cfg.resume}: {run_dir} is not a dgconv run directory (no config.json of a run), so it is "
                f"left untouched; resume the run directory the checkpoint came from, or start from its weights with "
                f"--init-from {source}"
            )
        last = run_dir / LAST
        if source.resolve() != last.resolve() and last.exists():
            at = contents(last).epoch
            if at > ckpt.epoch:
                raise ConfigError(
                    f"{source} holds epoch {ckpt.epoch}, but the run in {run_dir} is at epoch {at}: resuming from it "
                    f"would rewind that run. Copy the run directory and resume the copy, or resume {run_dir} itself."
                )
        cfg = merge_resume(cfg, ckpt.config, explicit)
        cfg.out = str(run_dir)
    cfg = cfg.resolved()
    if cfg.out is None:
        cfg.out = str(default_run_dir(cfg.model, cfg.dataset))
    return cfg, ckpt


def _already_finished(cfg: TrainConfig, ckpt: Contents) -> dict[str, Any]:
    done = ckpt.epoch
    _logger.info(
        "%s already finished its %s (test accuracy %.4f); nothing to do. To train it longer: %s",
        cfg.out, plural(done, "epoch"), float(ckpt.record.get("test_acc", ckpt.best_acc)),
        command("train", "--resume", str(cfg.out), "--epochs", str(done + max(1, done // 2))),
    )
    rows = read_metrics(cfg.out) if Path(cfg.out).is_dir() else []
    return rows[-1] if rows else dict(ckpt.record)


def _freeze(run: RunState, epoch: int) -> None:
    """Search, then train: every DGConv layer becomes its group convolution (optimizer state carried)."""
    run.constraint.freeze()
    freeze_groups(run.model, run.opt, run.cfg.orders)
    if run.lookahead is not None:  # the parameters changed: the slow weights start again from them
        run.lookahead = Lookahead(run.model, run.cfg.lookahead_alpha, run.cfg.lookahead_ramp, run.cfg.lookahead_buffers)
    run.net = wrap(run.model, run.cfg, run.env)
    if run.env.is_main:
        groups = run.constraint.summary()["groups"]
        _logger.info("froze the learned groups after epoch %d: %s; from here on the network trains as ResNeXt*",
                     epoch, list(groups.values()))


def _kept(run: RunState) -> str:
    """What a run stopped during ``run.epoch`` leaves behind, and how to continue it (for messages)."""
    if run.writer is None or not run.writer.has_checkpoint():
        return f"run {run.out} had not finished an epoch; nothing was kept"
    done = run.writer.committed_epoch or run.start_epoch
    return (f"kept the last good checkpoint {run.writer.last} (end of epoch {done}); continue with: "
            f"{command('train', '--resume', str(run.out))}")


def _train_epoch(run: RunState, epoch: int, progress: Progress) -> tuple[float, torch.Tensor]:
    """One pass over the training data; returns the last learning rate and the (unreduced) sums of task loss,
    constrained loss, correct predictions and examples."""
    cfg, env = run.cfg, run.env
    steps = len(run.train_loader)
    run.net.train()
    sums = torch.zeros(4, dtype=torch.float64, device=env.device)
    lr = cfg.lr
    with progress.phase(f"epoch {epoch + 1}/{cfg.epochs}", steps, run.train_loader.batch_size) as update:
        for i, (x, y) in enumerate(run.train_loader.epoch(epoch)):
            interrupts.check()  # a stop whose exception something swallowed still stops here
            lr = lr_at(cfg.schedule, cfg.lr, cfg.epochs, cfg.warmup_epochs, run.step, steps)  # type: ignore[arg-type]
            for group in run.opt.param_groups:
                group["lr"] = lr * group.get("lr_scale", 1.0)
            gates_on = cfg.gate_every == 1 or run.step % cfg.gate_every == 0
            with gate_gradients(run.model, gates_on):
                with cached_gates(run.model), torch.autocast(env.device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    logits = run.net(x)  # one host read of all gates, not one sync per DGConv layer
                task = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
                loss = run.constraint(task)
                run.opt.zero_grad(set_to_none=True)
                loss.backward()
            run.opt.step()
            run.step += 1
            if run.lookahead is not None and run.step % cfg.lookahead == 0:
                run.lookahead.step(run.step / (cfg.epochs * steps))
            n = torch.tensor(len(y), device=env.device)
            sums += torch.stack([task.detach() * len(y), loss.detach() * len(y), (logits.argmax(1) == y).sum(), n]).double()
            if i % 25 == 0 or i == steps - 1:  # checked every few steps: each check is a device sync
                value = task.item()
                if not math.isfinite(value):
                    raise TrainingError(f"the loss became {value} at epoch {epoch + 1}, step {run.step}; stopping, {_kept(run)}.")
                update(1, loss=value, lr=lr)
            else:
                update(1)
    return lr, sums


def _finish_epoch(run: RunState, epoch: int, lr: float, sums: torch.Tensor, started: float, progress: Progress) -> tuple[dict[str, Any], bool]:
    """Evaluate, enforce the budget, check the gates across processes; returns the metrics record and whether
    this epoch has the best test accuracy so far."""
    all_reduce_sum(sums)
    train_loss, train_closs, train_acc = (sums[:3] / sums[3]).tolist()
    test_loss, test_acc = evaluate(run.net, run.test_loader, run.cfg.amp, progress, run.cfg.tta)
    if not (math.isfinite(train_loss) and math.isfinite(test_loss)):
        raise TrainingError(f"non-finite loss at the end of epoch {epoch + 1}; stopping, {_kept(run)}.")
    constraint = run.constraint
    zeta_before = constraint.current()
    closed = constraint.project(optimizer=run.opt) if run.cfg.enforce_budget else []
    bad = constraint.nonfinite_gates()
    if bad:
        raise TrainingError(f"the gates of {', '.join(bad[:3])} became non-finite at epoch {epoch + 1}; stopping, "
                            f"{_kept(run)}. Check the budget, target and latency table for extreme values.")
    if not constraint.gates_in_sync(all_reduce_sum):
        raise TrainingError("DGConv gates differ between processes; this is a bug, please report it")
    state = constraint.summary()
    skipped = [*take_skipped(run.train_loader), *take_skipped(run.test_loader)]
    if skipped and run.env.is_main:
        _logger.warning("epoch %d skipped %d unreadable image(s), e.g. %s", epoch + 1, len(skipped), ", ".join(skipped[:3]))
    best = test_acc > run.best_acc
    if best:
        run.best_acc, run.best_epoch = test_acc, epoch + 1
    record = {
        "epoch": epoch + 1, "step": run.step, "lr": lr, "train_loss": train_loss, "train_loss_constrained": train_closs,
        "train_acc": train_acc, "test_loss": test_loss, "test_acc": test_acc, "best_acc": run.best_acc,
        "cost": state["cost"], "zeta": state["zeta"], "o": state["o"], "zeta_over_o": state["zeta_over_o"],
        "zeta_before_projection": zeta_before, "gates_closed_by_projection": [[n, k] for n, k in closed],
        "lambda": state["lambda"], "macs": state["macs"], "dgconv_macs": state["dgconv_macs"], "groups": state["groups"],
        "gates": state["gates"], "gates_in_sync": True, "frozen": run.constraint.frozen, "skipped_images": len(skipped),
        "time": time.time() - started,
    }
    return record, best


def _commit_epoch(run: RunState, record: dict[str, Any], best: bool, writer: Any) -> None:
    """Main process: the checkpoint (with the record), best.pt, the metrics line, groups.json -- in that order,
    see :mod:`dgconv.train.rundir` -- then TensorBoard and the console line."""
    cfg, env = run.cfg, run.env
    ckpt_doc = build_checkpoint(
        model_name=cfg.model, num_classes=run.num_classes, model_kwargs=run.model_kwargs,  # type: ignore[arg-type]
        input_size=list(run.input_size), model=run.model, optimizer=run.opt, epoch=record["epoch"], step=run.step,
        best_acc=run.best_acc, best_epoch=run.best_epoch, constraint=run.constraint.state_dict(),
        lookahead=run.lookahead.state_dict() if run.lookahead is not None else None,
        frozen=frozen_structure(run.model), config=dataclasses.asdict(cfg), cuda=env.device.type == "cuda",
    )
    state = run.constraint.summary()
    groups = (groups_document(state["groups"], state["channels"], cfg.model, structure_record(run.model))
              if run.constraint.layers else None)
    assert run.writer is not None
    run.writer.commit_epoch(ckpt_doc, record, best, groups)
    if writer is not None:
        _tensorboard_epoch(writer, record)
    ratio = f" zeta/o {record['zeta_over_o']:.3f}" if record["zeta_over_o"] is not None else ""
    groups_txt = f" groups {list(record['groups'].values())}" if record["groups"] else ""
    run.epoch_seconds.append(record["time"])
    left = run.eta(record["epoch"])
    eta = f", run done in about {duration(left)}" if record["epoch"] < cfg.epochs else ""
    _logger.info(
        "epoch %3d/%d loss %.4f train_acc %.4f test_acc %.4f%s%s lr %.4g %.1fs%s", record["epoch"], cfg.epochs,
        record["train_loss"], record["train_acc"], record["test_acc"], ratio, groups_txt, record["lr"], record["time"],
        eta,
    )



def _train(cfg: TrainConfig, env: DistEnv, writer: RunWriter | None, ckpt: Contents | None) -> dict[str, Any]:
    out = Path(cfg.out)  # type: ignore[arg-type]
    run = setup(cfg, env, out, writer, ckpt)
    main = env.is_main
    if writer is not None:
        config_doc = {
            "config": dataclasses.asdict(cfg), "environment": _environment(env), "num_classes": run.num_classes,
            "input_size": list(run.input_size), "o": run.constraint.o if run.constraint.constrained else None,
            "cost": run.constraint.cost.name, "cost_unit": run.constraint.cost.unit,
            "train_images_per_epoch": len(run.train_loader) * cfg.batch_size,
            "test_images": getattr(run.test_loader, "size", None), "data": run.data.info,
        }
        writer.write_config(config_doc, resumed_from=run.start_epoch if ckpt is not None else None)
        _logger.info(
            "dgconv train: %s on %s (%d train images/epoch), %s, batch %d, lr %s, %s, device %s x%d, out %s",
            cfg.model, cfg.dataset, len(run.train_loader) * cfg.batch_size, plural(cfg.epochs, "epoch"), cfg.batch_size, cfg.lr,
            budget_text(run.constraint), env.device, env.world_size, out,
        )
        if run.start_epoch:
            _logger.info("resumed from epoch %d (step %d)", run.start_epoch, run.step)
    tb = _tensorboard(cfg, writer) if writer is not None else None
    progress = Progress(cfg.progress and main)
    record: dict[str, Any] = {}
    freeze_at = cfg.freeze_epoch()
    try:
        for epoch in range(run.start_epoch, cfg.epochs):
            if freeze_at is not None and epoch >= freeze_at and not run.constraint.frozen:
                _freeze(run, epoch)
            started = time.time()
            lr, sums = _train_epoch(run, epoch, progress)
            record, best = _finish_epoch(run, epoch, lr, sums, started, progress)
            if main:
                _commit_epoch(run, record, best, tb)
    except Interrupted as e:
        e.detail = _kept(run)
        raise
    finally:
        if tb is not None:
            tb.close()
    if main and record:
        final_summary(run, record)
    return record


def _tensorboard(cfg: TrainConfig, writer: RunWriter):  # type: ignore[no-untyped-def]
    if not cfg.tensorboard:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        _logger.warning("--tensorboard: the tensorboard package is not installed (pip install 'dgconv[tensorboard]'); "
                        "skipping TensorBoard logs")
        return None
    return SummaryWriter(str(writer.tensorboard))


def _tensorboard_epoch(tb: Any, record: dict[str, Any]) -> None:
    epoch = record["epoch"]
    for k in ("train_loss", "train_acc", "test_loss", "test_acc", "lr", "zeta"):
        tb.add_scalar(k, record[k], epoch)
    if record["zeta_over_o"] is not None:
        tb.add_scalar("zeta_over_o", record["zeta_over_o"], epoch)
    for name, g in record["groups"].items():
        tb.add_scalar(f"groups/{name}", g, epoch)
    for name, values in record["gates"].items():
        tb.add_histogram(f"gates/{name}", torch.tensor(values), epoch)
    tb.flush()
