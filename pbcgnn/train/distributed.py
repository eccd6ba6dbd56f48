"""Data-parallel training on torch.distributed: process group, sampler, and rank-0-only output.

Launched by ``torchrun`` (which sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR``, ``MASTER_PORT``)::

    torchrun --nproc_per_node 4 -m pbcgnn.cli train DATA --batch-size 32 --out runs/ddp
    # several nodes: the same command on every node, plus
    torchrun --nnodes 2 --node_rank K --nproc_per_node 4 \\
             --rdzv_backend c10d --rdzv_endpoint HOST:29500 -m pbcgnn.cli train ...

``--batch-size`` is the *global* batch: each of W processes takes ``batch_size / W`` frames
of every step, chosen by a :class:`~torch.utils.data.distributed.DistributedSampler`. A single
process uses the same sampler with one replica, so one process and W processes see the same
frames in every step, and (with the loss normalised over the global batch, see
:func:`global_sum`) take the same optimizer steps up to float rounding.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data.distributed import DistributedSampler

from ..errors import InputError

__all__ = ["Context", "setup", "device_for", "global_sum", "make_sampler", "elapsed_since"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size`` (1 when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and TensorBoard events."""
        return self.rank == 0


def setup(device: torch.device) -> Context:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Uses NCCL for CUDA devices and gloo otherwise. With CUDA, each process takes the GPU
    ``LOCAL_RANK``. Without ``WORLD_SIZE`` > 1 nothing happens.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    ctx = Context(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
    return ctx


def device_for(ctx: Context, device: torch.device) -> torch.device:
    """The device of this rank: ``cuda:LOCAL_RANK`` for CUDA, else ``device``."""
    return torch.device("cuda", ctx.local_rank) if device.type == "cuda" and ctx.distributed else device


def make_sampler(dataset, ctx: Context, batch_size: int, seed: int) -> tuple[DistributedSampler, int]:
    """Shuffling sampler over this rank's share and the per-rank batch size.

    Raises:
        InputError: the global batch does not split evenly over the processes.
    """
    if batch_size % ctx.world_size:
        raise InputError(
            f"expected a batch size divisible by the {ctx.world_size} processes, found {batch_size}")
    sampler = DistributedSampler(dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True,
                                 seed=seed, drop_last=False)
    return sampler, batch_size // ctx.world_size


def global_sum(value: torch.Tensor, ctx: Context) -> torch.Tensor:
    """Sum of ``value`` over all processes (a copy; no gradient flows through it)."""
    if not ctx.distributed:
        return value.detach()
    total = value.detach().clone()
    dist.all_reduce(total, op=dist.ReduceOp.SUM)
    return total


def elapsed_since(t_start: float, ctx: Context) -> float:
    """Wall time since ``t_start`` (``time.monotonic``), the largest over processes: every rank
    then sets the same learning rate and stops at the same epoch."""
    elapsed = torch.tensor([time.monotonic() - t_start], dtype=torch.float64)
    if ctx.distributed:
        dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return float(elapsed)
