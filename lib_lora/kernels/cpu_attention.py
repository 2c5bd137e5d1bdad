"""Softmax attention for small head sizes on the CPU, through small_head_attention.c.

`attention(q, k, v, heads, scale)` takes projections as they come out of the
linear layers, (batch, tokens, heads * head_size), and returns the same layout,
differentiable in q, k and v. The C code splits heads over OpenMP threads; built
with -fopenmp it binds to the OpenMP runtime torch already loaded, so it uses
torch's thread pool and thread count (no second pool competing for the cores).
Each head is computed by one thread in a fixed order, so results do not depend
on the thread count.

`available()` builds and loads the kernel once and says why not when it cannot;
`runs_on(q, k, v, heads)` says whether a call would take this path (CPU, fp32,
head size 4 or 8); callers fall back to scaled_dot_product_attention otherwise.
"""
from __future__ import annotations

import ctypes
import threading
from pathlib import Path

import torch

from .build import KernelUnavailable, load_kernel

HEAD_SIZES = (4, 8)  # from 16 on PyTorch's flash attention is faster
SOURCE = Path(__file__).with_name("small_head_attention.c")

_lock = threading.Lock()
_library: ctypes.CDLL | None = None
_unavailable: str | None = None


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr, i32, f32 = ctypes.c_void_p, ctypes.c_int, ctypes.c_float
    lib.sha_forward.argtypes = [ptr] * 5 + [i32] * 6 + [f32]
    lib.sha_backward.argtypes = [ptr] * 9 + [i32] * 6 + [f32]
    lib.sha_forward.restype = lib.sha_backward.restype = lib.sha_threads.restype = i32
    lib.sha_threads.argtypes = []
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


def threads() -> int:
    """How many threads a kernel call splits its heads over (1 without OpenMP)."""
    return _library.sha_threads() if _library is not None else 0


def runs_on(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> bool:
    tensors = (q, k, v)
    if any(t.device.type != "cpu" or t.dtype != torch.float32 or t.dim() != 3 for t in tensors):
        return False
    if q.shape[-1] % heads or q.shape[-1] != k.shape[-1] or k.shape != v.shape or q.shape[0] != k.shape[0]:
        return False
    return q.shape[-1] // heads in HEAD_SIZES and k.shape[1] > 0 and _library is not None


def _run(fn, pointers: list[int], n_heads: int, dims: tuple) -> None:
    """Call fn(*pointers, 0, n_heads, *dims); the C code splits heads over OpenMP threads."""
    code = fn(*pointers, 0, n_heads, *dims)
    if code == 1:
        raise MemoryError("the CPU attention kernel could not allocate its work buffer")
    if code:
        raise RuntimeError(f"the CPU attention kernel refused its input (code {code})")


class _SmallHeadAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, heads: int, scale: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        batch, nq, width = q.shape
        out = torch.empty_like(q)
        lse = torch.empty(batch * heads, nq, dtype=torch.float32)
        dims = (heads, nq, k.shape[1], width // heads, scale)
        _run(_library.sha_forward, [q.data_ptr(), k.data_ptr(), v.data_ptr(), out.data_ptr(), lse.data_ptr()],
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
        _run(_library.sha_backward, pointers, q.shape[0] * ctx.dims[0], ctx.dims)
        return dq, dk, dv, None, None


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int, scale: float) -> torch.Tensor:
    """softmax(q k^T * scale) v per head, on (batch, tokens, heads * head_size) tensors.

    Only for inputs where `runs_on` is true (call `available()` first)."""
    return _SmallHeadAttention.apply(q, k, v, heads, float(scale))
