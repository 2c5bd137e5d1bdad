"""Data parallelism without wrapping the network: shard each global batch, average gradients.

Works under `torchrun` and `accelerate launch --multi_gpu` (both set RANK and
WORLD_SIZE). The network is not called through DDP (the base model calls its
modules), so gradients are averaged explicitly after backward: every rank then
takes the identical optimizer step, and the result equals one process at the
same global batch. Single process: every function is a no-op.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as tdist


def world_size() -> int:
    return tdist.get_world_size() if tdist.is_available() and tdist.is_initialized() else 1


def rank() -> int:
    return tdist.get_rank() if tdist.is_available() and tdist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group when launched by torchrun/accelerate; True if distributed."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or not tdist.is_available():
        return False
    if not tdist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        tdist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def local_device() -> str:
    if torch.cuda.is_available():
        return f"cuda:{os.environ.get('LOCAL_RANK', '0')}"
    return "cpu"


def shard_rows(batch_size: int) -> list[int]:
    """Which rows of a global batch this rank trains on (interleaved); empty when the batch is
    smaller than the world. The trainer scales each rank's loss by its share of the batch, so
    the averaged gradients equal the global-batch mean even when shares differ."""
    n = world_size()
    if n == 1:
        return list(range(batch_size))
    return list(range(rank(), batch_size, n))


def mean_of(value: torch.Tensor) -> float:
    """The mean of a scalar over ranks, as a Python float (the trainer's one host sync per step)."""
    if world_size() == 1:
        return float(value)
    t = value.detach().float().reshape(1).clone()
    tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
    return float(t) / world_size()


def any_rank(flag: bool) -> bool:
    if world_size() == 1:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=local_device())
    tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
    return bool(t.item() > 0)


def broadcast_parameters(module: torch.nn.Module) -> None:
    if world_size() == 1:
        return
    for p in module.parameters():
        tdist.broadcast(p.data, src=0)


def average_gradients(params) -> None:
    n = world_size()
    if n == 1:
        return
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
        p.grad /= n
