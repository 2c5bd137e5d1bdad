"""VRAM policy: before a run, compare what it will need with what is free, and say what fits.

The WebUI's model already sits in VRAM, so the need is what training ADDS: LoRA
parameters with their gradients and optimizer state, and activations (scaling
with batch x pixels, cut about 4x by gradient checkpointing). The figures are
rough (good to a factor ~1.5); the check refuses only when even the estimate
does not fit, and then lists settings that would. Free VRAM is measured with
torch.cuda.mem_get_info; on CPU there is nothing to check (never a silent spill).
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lib_lora.errors import LoraError

# activation bytes per sample at 512x512 without gradient checkpointing, mixed precision
ACTIVATIONS_512 = {"sd1": 1.2e9, "sd2": 1.4e9, "sdxl": 2.6e9}
CHECKPOINTING_FACTOR = 0.25
HEADROOM = 1.10            # fragmentation and the CUDA context
MIB = 2 ** 20


def free_vram_mb(device: torch.device | str | None = None) -> float | None:
    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free / MIB


def lora_param_count(targets: list, dim: int) -> int:
    """About dim x (in + out) per Linear/Conv in the target roots."""
    count = 0
    for target in targets:
        for module in target.root.modules():
            if isinstance(module, torch.nn.Linear):
                count += dim * (module.in_features + module.out_features)
            elif isinstance(module, torch.nn.Conv2d):
                count += dim * (module.in_channels + module.out_channels)
    return count


def optimizer_bytes_per_param(optimizer: str) -> int:
    """weights fp32 + grads fp32 + state (two fp32 moments; 8-bit ones take 2 bytes)."""
    name = optimizer.lower()
    if "8bit" in name:
        return 4 + 4 + 2
    if name in ("sgdnesterov", "sgd", "lion"):
        return 4 + 4 + 4
    return 4 + 4 + 8


def estimate_need_mb(cfg: Any, family: str, lora_params: int, largest_bucket_px: int) -> float:
    t = cfg.training
    per_sample = ACTIVATIONS_512.get(family, ACTIVATIONS_512["sd1"]) * largest_bucket_px / (512 * 512)
    if t.gradient_checkpointing:
        per_sample *= CHECKPOINTING_FACTOR
    if t.mixed_precision == "no":
        per_sample *= 2
    activations = per_sample * t.batch_size
    return (activations + lora_params * optimizer_bytes_per_param(t.optimizer)) * HEADROOM / MIB


def _variants(cfg: Any):
    """Cheaper settings in the order users prefer them: keep quality first, then speed."""
    t = cfg.training
    if not t.gradient_checkpointing:
        yield "gradient checkpointing on", {"gradient_checkpointing": True}
    steps = {"gradient_checkpointing": True}
    if "8bit" not in t.optimizer.lower():
        steps = {**steps, "optimizer": "AdamW8bit"}
        yield "gradient checkpointing + AdamW8bit", steps
    batch = t.batch_size
    while batch > 1:
        batch //= 2
        accum = t.gradient_accumulation_steps * (t.batch_size // batch)
        yield (f"batch size {batch} with gradient accumulation {accum}",
               {**steps, "batch_size": batch, "gradient_accumulation_steps": accum})


def check_vram(cfg: Any, family: str, lora_params: int, largest_bucket_px: int,
               free_mb: float | None) -> float:
    """Return the estimated need in MiB; raise LoraError naming settings that fit when it does not."""
    need = estimate_need_mb(cfg, family, lora_params, largest_bucket_px)
    if free_mb is None or need <= free_mb:
        return need
    fits = []
    for label, changes in _variants(cfg):
        trial = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **changes))
        if estimate_need_mb(trial, family, lora_params, largest_bucket_px) <= free_mb:
            fits.append(label)
            break
    fix = (f"Try: {fits[0]}" if fits else
           "Lower the resolution or network dim, or free VRAM (close other programs, or use a smaller checkpoint)")
    raise LoraError(f"This run needs about {need:.0f} MiB of VRAM but only {free_mb:.0f} MiB is free",
                    where="Training settings", fix=fix)
