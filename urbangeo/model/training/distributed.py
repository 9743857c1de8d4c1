"""Training under ``torchrun``: this process's place in the job, and the collectives the
trainer needs beyond DistributedDataParallel's own."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn


@dataclass(frozen=True)
class DistInfo:
    """This process's place in a torchrun job (rank 0 of 1 without one)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """Whether this process writes files and shows progress."""
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1


def init_distributed(device: str | None = None) -> DistInfo:
    """Join the process group torchrun describes (WORLD_SIZE > 1), gloo on CPU, nccl on CUDA."""
    if dist.is_available() and dist.is_initialized():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or device.startswith("cuda"))
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group("nccl" if use_cuda else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, owns_group=True)


def all_sizes(n: int, info: DistInfo, device: torch.device) -> list[int]:
    """Every rank's ``n`` (this process's alone without a job)."""
    if not info.enabled:
        return [n]
    local = torch.tensor([n], device=device)
    sizes = [torch.zeros_like(local) for _ in range(info.world_size)]
    dist.all_gather(sizes, local)
    return [int(s) for s in sizes]


def mean_across(values: Tensor, info: DistInfo) -> Tensor:
    """The mean of ``values`` over all ranks (a copy; ``values`` itself without a job)."""
    if info.enabled:
        values = values.clone()
        dist.all_reduce(values)
        values /= info.world_size
    return values


def allreduce_grads(params: list[nn.Parameter], world: int) -> None:
    """Average the gradients of ``params`` over all ranks, in place."""
    for param in params:
        if param.grad is not None:
            dist.all_reduce(param.grad)
            param.grad /= world


def any_rank(flag: bool, info: DistInfo, device: torch.device) -> bool:
    """Whether ``flag`` holds on any rank (this process's alone without a job)."""
    if not info.enabled:
        return flag
    value = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)
