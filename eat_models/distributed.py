"""Data-parallel training and embedding under ``torchrun`` (torch.distributed).

``torchrun --nproc_per_node N -m eat_command train …`` (or ``eat train`` started by torchrun)
sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``;
:func:`context` then joins the process group: **gloo** on CPU, **NCCL** on GPU (rank r on
``cuda:LOCAL_RANK``). Without those variables everything runs in one process as before.

Training is synchronous data parallelism, the algorithm of
``torch.nn.parallel.DistributedDataParallel``: every rank holds every member (identical
initial weights, broadcast from rank 0), every step draws the same global batch per member
(the samplers are seeded alike) and each rank takes its share ``rows[rank::world_size]``;
after the backward pass the gradients are averaged over the ranks with one
``all_reduce`` per step, so every rank takes the same optimiser step. The DDP *wrapper* is
not used because the defenses call the members outside the training backward (PGD crafts
examples with ``autograd.grad`` with respect to the input), which DDP's gradient reducer
does not allow; averaging the gradients explicitly is the same computation. BatchNorm
statistics are per rank, and rank 0's running statistics are saved (DDP broadcasts rank
0's buffers too). Rank 0 alone writes the checkpoint.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


@dataclass(frozen=True)
class Context:
    """This process's place in the job: ``rank`` of ``world_size`` (1: not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, rows):
        """This rank's share of a global batch or list of rows: ``rows[rank::world_size]``."""
        return rows[self.rank :: self.world_size] if self.distributed else rows


def context(device: str = "cpu") -> Context:
    """Join the process group torchrun describes (once), or the single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Context()
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    if not dist.is_initialized():
        backend = "nccl" if str(device).startswith("cuda") else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return Context(rank, world, local)


def broadcast_parameters(modules, ctx: Context) -> None:
    """Every rank starts from rank 0's parameters and buffers."""
    if not ctx.distributed:
        return
    for module in modules:
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def average_gradients(parameters, ctx: Context) -> None:
    """Replace each gradient by its mean over the ranks (one all-reduce of all of them).
    A parameter without a gradient on this rank counts as a zero gradient."""
    if not ctx.distributed:
        return
    params = [p for p in parameters if p.requires_grad]
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= ctx.world_size
    for grad, reduced in zip(grads, _unflatten_dense_tensors(flat, grads), strict=True):
        grad.copy_(reduced)


def mean_over_ranks(value: float, ctx: Context) -> float:
    """A scalar averaged over the ranks (for logs)."""
    if not ctx.distributed:
        return float(value)
    t = torch.tensor([float(value)], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / ctx.world_size


def gather_objects(obj, ctx: Context) -> list:
    """Every rank's ``obj`` (rank order) on every rank; ``[obj]`` when not distributed."""
    if not ctx.distributed:
        return [obj]
    out: list = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(ctx: Context) -> None:
    if ctx.distributed:
        dist.barrier()
