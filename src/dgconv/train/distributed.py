"""Process-group helpers for ``torchrun``: gloo on CPU, NCCL on GPU; a single process needs nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "all_reduce_sum", "shutdown", "lost_peer", "lost_rank_message"]


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistEnv:
    """Join the process group that ``torchrun`` describes in the environment (``WORLD_SIZE`` > 1), or not.

    ``device``: ``"cpu"``, ``"cuda"`` or ``None`` (CUDA when available). With CUDA each process uses
    ``cuda:LOCAL_RANK`` and NCCL; on the CPU, gloo.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda was asked for, but CUDA is not available")
    dev = torch.device("cuda", local) if device == "cuda" else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistEnv(rank, world, local, dev)


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over processes (identity without a process group)."""
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def shutdown(barrier: bool = True) -> None:
    """Leave the process group. With ``barrier`` (a normal end) all processes meet first, so none tears down gloo or
    NCCL while another still has work in flight (a rank that left early made the other abort with "terminate called
    without an active exception"). After an error, pass ``barrier=False``: the other ranks may never arrive."""
    if dist.is_available() and dist.is_initialized():
        if barrier:
            try:
                dist.barrier()
            except RuntimeError:
                pass
        dist.destroy_process_group()


def lost_peer(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another process of the job is gone."""
    text = str(e)
    return isinstance(e, getattr(dist, "DistBackendError", ())) or any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL error",
                            "Socket closed", "connection reset"))


def lost_rank_message(env: DistEnv, out: str, checkpoint: Path | None) -> str:
    """What a surviving process says when another one is gone: which rank, and how to go on (``checkpoint``: the
    run's last checkpoint, on rank 0, when one was written)."""
    others = [r for r in range(env.world_size) if r != env.rank]
    who = f"rank {others[0]}" if len(others) == 1 else f"one of ranks {others[0]}-{others[-1]}"
    if not env.is_main:
        kept = f"rank 0 keeps the run directory {out}"
    elif checkpoint is None:
        kept = "no epoch had finished, so nothing was kept; start the job again"
    else:
        kept = (f"the last checkpoint {checkpoint} is whole; continue with: "
                f"torchrun --nproc_per_node {env.world_size} -m dgconv train --resume {out}")
    return f"rank {env.rank} lost contact with {who} of this {env.world_size}-process job (it stopped or died); {kept}"
