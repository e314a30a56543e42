"""Process-group helpers for ``torchrun``: gloo on CPU, NCCL on GPU; a single process needs nothing."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistEnv", "init_distributed", "all_reduce_sum", "shutdown"]


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
