"""Softmax attention for small head sizes on the CPU, through small_head_attention.c.

`attention(q, k, v, heads, scale)` takes projections as they come out of the
linear layers, (batch, tokens, heads * head_size), and returns the same layout,
differentiable in q, k and v. Heads are split across `torch.get_num_threads()`
worker threads (ctypes releases the GIL); each head is computed by one thread in
a fixed order, so results do not depend on the thread count.

`available()` builds and loads the kernel once and says why not when it cannot;
`runs_on(q, k, v, heads)` says whether a call would take this path (CPU, fp32,
head size 4 or 8); callers fall back to scaled_dot_product_attention otherwise.
"""
from __future__ import annotations

import ctypes
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from .build import KernelUnavailable, load_kernel

HEAD_SIZES = (4, 8)  # from 16 on PyTorch's flash attention is faster
SOURCE = Path(__file__).with_name("small_head_attention.c")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_unavailable: str | None = None
_pool: ThreadPoolExecutor | None = None
_pool_workers = 0


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i32, f32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.sha_forward.argtypes = [ptr] * 5 + [i32] * 6 + [f32]
    lib.sha_backward.argtypes = [ptr] * 9 + [i32] * 6 + [f32]
    lib.sha_forward.restype = lib.sha_backward.restype = i32
    return lib


def available() -> tuple[bool, str]:
    """(True, '') once the kernel is loaded; (False, reason) when it cannot be built here."""
    global _library, _unavailable
    with _lock:
        if _library is None and _unavailable is None:
            try:
                _library = _bind(load_kernel(SOURCE))
            except KernelUnavailable as e:
                _unavailable = str(e)
    return _library is not None, _unavailable or ""


def runs_on(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> bool:
    tensors = (q, k, v)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.dim() != 3 for t in tensors):
        return False
    if q.shape[-1] % heads or q.shape[-1] != k.shape[-1] or k.shape != v.shape or q.shape[0] != k.shape[0]:
        return False
    return q.shape[-1] // heads in HEAD_SIZES and k.shape[1] > 0 and _library is not None


def _workers() -> ThreadPoolExecutor | None:
    global _pool, _pool_workers
    wanted = max(1, torch.get_num_threads())
    if wanted == 1:
        return None
    with _lock:
        if _pool is None or _pool_workers != wanted:
            if _pool is not None:
                _pool.shutdown(wait=False)
            _pool, _pool_workers = ThreadPoolExecutor(wanted, thread_name_prefix="lib_lora_attention"), wanted
        return _pool


def _run_split(fn, pointers: list[int], n_heads: int, dims: tuple) -> None:
    """Call fn(*pointers, h0, h1, *dims) over head ranges, in parallel when threads allow."""
    pool = _workers()
    parts = 1 if pool is None else min(n_heads, _pool_workers)
    bounds = [n_heads * i // parts for i in range(parts + 1)]
    if pool is None or parts == 1:
        codes = [fn(*pointers, 0, n_heads, *dims)]
    else:
        futures = [pool.submit(fn, *pointers, a, b, *dims) for a, b in zip(bounds, bounds[1:]) if b > a]
        codes = [f.result() for f in futures]
    if any(codes):
        raise MemoryError("the CPU attention kernel could not allocate its work buffer") if 1 in codes else \
            RuntimeError(f"the CPU attention kernel refused its input (codes {codes})")


class _SmallHeadAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, heads: int, scale: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        batch, nq, width = q.shape
        out = torch.empty_like(q)
        lse = torch.empty(batch * heads, nq, dtype=torch.float32)
        dims = (heads, nq, k.shape[1], width // heads, scale)
        _run_split(_library.sha_forward, [q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()],
                   batch * heads, dims)
        ctx.save_for_backward(q, k, v, out, lse)
        ctx.dims = dims
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, out, lse = ctx.saved_tensors
        grad_out = grad_out.contiguous()
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        pointers = [t.data_ptr() for t in (q, k, v, out, grad_out, lse, dq, dk, dv)]
        _run_split(_library.sha_backward, pointers, q.shape[0] * ctx.dims[0], ctx.dims)
        return dq, dk, dv, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v per head, on (batch, tokens, heads * head_size) tensors.

    Only for inputs where `runs_on` is true (call `available()` first)."""
    return _SmallHeadAttention.apply(q, k, v, heads, float(scale))
