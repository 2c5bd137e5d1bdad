"""Mixed precision for the loop: autocast for the forward pass, loss scaling for fp16.

fp16 needs a GradScaler: small gradients underflow in half precision, so the loss
is multiplied before backward and the gradients divided again before clipping
and the optimizer step (a step whose gradients overflowed is skipped and the
scale lowered). bf16 has fp32's range and needs no scaling. Both only on CUDA;
on CPU the run is fp32 and the trainer says so. LoRA parameters stay fp32 in
every mode; only the frozen base model may be held in half precision.
"""
from __future__ import annotations

import contextlib

import torch


class Precision:
    def __init__(self, mode: str, device: torch.device):
        self.enabled = mode in ("fp16", "bf16") and device.type == "cuda"
        self.device_type = device.type
        self.dtype = torch.float16 if mode == "fp16" else torch.bfloat16
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
