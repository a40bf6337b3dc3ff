"""DistributedDataParallel plumbing: process group from torchrun's env, batch sharding, reductions.

A single process is the world of size 1, so the trainer calls the same helpers either way and the
global batch (what the optimiser averages over) is the same for any number of ranks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from moectl.errors import TrainingError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; `owns_group` when we created the process group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def launched_world_size() -> int:
    """How many processes this job has: the joined group's size, else torchrun's WORLD_SIZE."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", "1"))


def init_distributed(device_type: str) -> DistContext:
    """Join the torchrun job described by the environment (nccl on CUDA, gloo otherwise)."""
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), _local_rank(), False)
    if launched_world_size() <= 1:
        return DistContext()
    backend = "nccl" if device_type == "cuda" else "gloo"
    if device_type == "cuda":
        torch.cuda.set_device(_local_rank())
    dist.init_process_group(backend=backend)
    return DistContext(dist.get_rank(), dist.get_world_size(), _local_rank(), True)


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def shutdown(ctx: DistContext) -> None:
    if ctx.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard_rows(ctx: DistContext, batch_size: int) -> slice:
    """This rank's rows of a micro-batch: equal contiguous slices, so ranks average exactly."""
    if batch_size % ctx.world_size:
        raise TrainingError(
            f"train.batch_size ({batch_size}) must be divisible by the number of processes "
            f"({ctx.world_size})",
            hint="the global batch is split across ranks; pick a batch size that divides evenly",
        )
    per_rank = batch_size // ctx.world_size
    return slice(ctx.rank * per_rank, (ctx.rank + 1) * per_rank)


def all_reduce_sum(ctx: DistContext, tensors: list[torch.Tensor], device: torch.device) -> None:
    """Sum each tensor across ranks in place (a no-op in one process)."""
    if not ctx.enabled:
        return
    for tensor in tensors:
        buffer = tensor.to(device)
        dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
        tensor.copy_(buffer.to(tensor.device))


def any_rank(ctx: DistContext, flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (so all ranks stop at the same step)."""
    if not ctx.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()
