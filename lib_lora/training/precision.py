"""Mixed precision for the loop: autocast for the forward pass, loss scaling for fp16.

fp16 needs a GradScaler: small gradients underflow in half precision, so the loss
is multiplied before backward and the gradients divided again before clipping
and the optimizer step (a step whose gradients overflowed is skipped and the
scale lowered). bf16 has fp32's range and needs no scaling. On CUDA both run;
on CPU bf16 runs (oneDNN has bf16 matmuls and convolutions), while fp16 does
not: CPU kernels such as group_norm refuse fp16 parameters under autocast and
most fp16 CPU kernels are slower than fp32, so an fp16 run on CPU trains in fp32
and `note()` says so. LoRA parameters stay fp32 in every mode; only the frozen
base model may be held in half precision (bf16 on CPU, where fp16 weights would
meet those same kernels).
"""
from __future__ import annotations

import contextlib

import torch


def autocast_dtype(mode: str, device: torch.device) -> torch.dtype | None:
    """The dtype autocast computes in for `mode` on `device`; None when the run is fp32."""
    if mode == "bf16" and device.type in ("cuda", "cpu"):
        return torch.bfloat16
    if mode == "fp16" and device.type == "cuda":
        return torch.float16
    return None


def cpu_has_bf16() -> bool:
    """Native bf16 matrix instructions; without them oneDNN emulates bf16 (measured here: under 1
    GFLOP/s against 17 for fp32 on an AVX2 CPU)."""
    probes = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(probe() for probe in probes if probe is not None)


def note(mode: str, device: torch.device) -> str:
    """What the user must know about `mode` on `device` ('' when it runs as asked)."""
    if mode == "fp16" and device.type == "cpu":
        return ("Mixed precision fp16 does not run on CPU (its kernels refuse or slow down half-precision "
                "weights); training in fp32. Set training.mixed_precision to bf16 for half-precision "
                "compute on CPU")
    if mode == "bf16" and device.type == "cpu" and not cpu_has_bf16():
        return ("This CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 compute is emulated, many times "
                "slower than fp32. Set training.mixed_precision to no on this machine")
    if mode != "no" and autocast_dtype(mode, device) is None:
        return f"Mixed precision {mode} is not available on {device.type}; training in fp32"
    return ""


class Precision:
    def __init__(self, mode: str, device: torch.device):
        dtype = autocast_dtype(mode, device)
        self.enabled = dtype is not None
        self.device_type = device.type
        self.dtype = dtype or torch.float32
        self.scaler = torch.amp.GradScaler("cuda") if self.enabled and mode == "fp16" else None

    def autocast(self):
        if not self.enabled:
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=self.dtype)

    def backward(self, loss: torch.Tensor) -> None:
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self, optimizer, params: list, max_grad_norm: float) -> None:
        """Unscale (fp16), clip, step; with fp16 a step with inf/NaN gradients is skipped."""
        if self.scaler:
            self.scaler.unscale_(optimizer)
        if max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
        if self.scaler:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()

    def state_dict(self) -> dict:
        return self.scaler.state_dict() if self.scaler else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scaler and state:
            self.scaler.load_state_dict(state)
