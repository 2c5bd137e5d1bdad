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


def shard(batch: list) -> list:
    """This rank's share of a global batch (interleaved, so every rank gets one when sizes allow)."""
    n = world_size()
    if n == 1:
        return batch
    part = batch[rank()::n]
    return part or batch[:1]


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
