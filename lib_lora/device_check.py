"""Is the device a user named there? Asked before a model or a tensor is moved to it, so a
missing GPU is one sentence (what, where, what to do) instead of torch's assertion deep inside
a `.to()` call."""
from __future__ import annotations

from .errors import LoraError


def check_device(device: str, where: str) -> str:
    """`device` ('cpu', 'cuda', 'cuda:1', 'mps', 'auto') as torch names it, if this machine has it."""
    import torch

    name = (device or "auto").strip().lower()
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(name)
    except (RuntimeError, ValueError):
        raise LoraError(f"{device!r} is not a device name", where=where,
                        fix="Use cpu, cuda, cuda:N (N counted from 0) or auto") from None
    if parsed.type == "cpu":
        return name
    if parsed.type == "cuda":
        _check_cuda(parsed.index, device, where)
        return name
    if parsed.type == "mps" and getattr(torch.backends, "mps", None) is not None \
            and torch.backends.mps.is_available():
        return name
    raise LoraError(f"Device {device!r} is not available on this machine", where=where,
                    fix="Use cpu, or auto to take a GPU when there is one")


def _check_cuda(index: int | None, device: str, where: str) -> None:
    import torch

    if not torch.cuda.is_available():
        why = "this PyTorch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
        raise LoraError(f"CUDA device {device!r} is not available ({why})", where=where,
                        fix="Use cpu (or auto), or install a CUDA build of PyTorch on a machine with an NVIDIA GPU")
    count = torch.cuda.device_count()
    if index is not None and index >= count:
        raise LoraError(f"CUDA device {device!r} does not exist: this machine has {count} GPU"
                        f"{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})", where=where,
                        fix="Name one of those, or check CUDA_VISIBLE_DEVICES")
