"""VRAM policy: before a run, compare what it will need with what is free, and say what fits.

The WebUI's model already sits in VRAM, so the need is what training ADDS: LoRA
parameters with their gradients and optimizer state, and activations (scaling
with batch x pixels of the plan's largest bucket, cut about 4x by gradient
checkpointing; the text encoder's only when it is trained). The figures are
rough (good to a factor ~1.5); the check refuses only when even the estimate
does not fit, and then names the first cheaper settings that would. A run that
does not fit must never start: NVIDIA's Windows driver would otherwise spill it
into system memory and train 10-50x slower without a word. Free VRAM is
measured with torch.cuda.mem_get_info; on CPU there is nothing to check.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lib_lora.errors import LoraError

# activation bytes per sample at 512x512 without gradient checkpointing, mixed precision
ACTIVATIONS_512 = {"sd1": 1.2e9, "sd2": 1.4e9, "sdxl": 2.6e9}
# the same for a trained text encoder (per sample, 77-token chunk; all encoders of the family)
TE_ACTIVATIONS = {"sd1": 0.10e9, "sd2": 0.25e9, "sdxl": 0.45e9}
CHECKPOINTING_FACTOR = 0.25
HEADROOM = 1.10            # fragmentation and the CUDA context
MIB = 2 ** 20
# bytes of optimizer state per trained parameter (weights and gradients are counted apart)
OPTIMIZER_STATE = {"adamw": 8, "adamw8bit": 2, "lion": 4, "lion8bit": 1, "prodigy": 16, "dadaptadam": 12,
                   "adafactor": 4, "sgdnesterov": 4, "adamwschedulefree": 8}


def free_vram_mb(device: torch.device | str | None = None) -> float | None:
    """Free memory of `device` in MiB; None when it is not a CUDA device (nothing to check)."""
    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free / MIB


def lora_param_counts(targets: list, network_cfg: Any) -> dict[str, int]:
    """Trainable LoRA parameters per target kind ('unet', 'text_encoder'), from the layers the
    network will really select (nothing is built): rank x (in + out) per layer."""
    from torch import nn

    from lib_lora.networks.network import select_layers
    counts = {"unet": 0, "text_encoder": 0}
    for target in targets:
        for _key, layer, conv3x3 in select_layers(target, network_cfg):
            rank = network_cfg.conv_dim if conv3x3 else network_cfg.dim
            if isinstance(layer, nn.MultiheadAttention):       # q, k, v and out
                count = 4 * rank * 2 * layer.embed_dim
            elif isinstance(layer, nn.Conv2d):
                kernel = layer.kernel_size[0] * layer.kernel_size[1]
                count = rank * (layer.in_channels * kernel + layer.out_channels)
            else:
                count = rank * (layer.in_features + layer.out_features)
            counts["unet" if target.kind == "unet" else "text_encoder"] += count
    return counts


def optimizer_bytes_per_param(optimizer: str) -> int:
    """fp32 weights + fp32 gradients + the optimizer's state."""
    return 4 + 4 + OPTIMIZER_STATE.get(optimizer.lower(), 8)


def estimate_need_mb(cfg: Any, family: str, counts: dict[str, int], largest_bucket_px: int) -> float:
    t, n = cfg.training, cfg.network
    scale = largest_bucket_px / (512 * 512)
    per_sample = ACTIVATIONS_512.get(family, ACTIVATIONS_512["sd1"]) * scale
    params = counts.get("unet", 0) if n.train_unet else 0
    if n.train_text_encoder:
        per_sample += TE_ACTIVATIONS.get(family, TE_ACTIVATIONS["sd1"]) * max(1, cfg.dataset.max_token_length // 75)
        params += counts.get("text_encoder", 0)
    if t.gradient_checkpointing:
        per_sample *= CHECKPOINTING_FACTOR
    if t.mixed_precision == "no":
        per_sample *= 2
    activations = per_sample * t.batch_size
    return (activations + params * optimizer_bytes_per_param(t.optimizer)) * HEADROOM / MIB


def _variants(cfg: Any):
    """Cheaper settings, each adding to the one before, in the order users prefer them: keep
    quality first (checkpointing only costs time), then the text encoder, then the optimizer,
    then smaller batches with gradient accumulation (same effective batch)."""
    t, n = cfg.training, cfg.network
    training: dict[str, Any] = {}
    network: dict[str, Any] = {}
    labels: list[str] = []
    if not t.gradient_checkpointing:
        training["gradient_checkpointing"] = True
        labels.append("gradient checkpointing on")
        yield list(labels), training, network
    if n.train_text_encoder and n.train_unet:
        network = {"train_text_encoder": False}
        training = {**training, "cache_text_encoder_outputs": True}
        labels.append("train the UNet only, with the text-encoder output cache on")
        yield list(labels), training, network
    if "8bit" not in t.optimizer.lower() and t.optimizer.lower() in ("adamw", "lion"):
        training = {**training, "optimizer": f"{t.optimizer}8bit"}
        labels.append(f"optimizer {t.optimizer}8bit")
        yield list(labels), training, network
    batch = t.batch_size
    while batch > 1:
        batch //= 2
        accum = t.gradient_accumulation_steps * (t.batch_size // batch)
        step = {**training, "batch_size": batch, "gradient_accumulation_steps": accum}
        yield labels + [f"batch size {batch} with gradient accumulation {accum}"], step, network


def check_vram(cfg: Any, family: str, counts: dict[str, int], largest_bucket_px: int,
               free_mb: float | None) -> float:
    """Return the estimated need in MiB; raise LoraError naming settings that fit when it does not."""
    need = estimate_need_mb(cfg, family, counts, largest_bucket_px)
    if free_mb is None or need <= free_mb:
        return need
    fix = ("Lower the resolution or the network dim, or free VRAM (close other programs, unload other "
           "models, or use a smaller checkpoint)")
    for labels, training, network in _variants(cfg):
        trial = dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **training),
                                    network=dataclasses.replace(cfg.network, **network))
        trial_need = estimate_need_mb(trial, family, counts, largest_bucket_px)
        if trial_need <= free_mb:
            fix = f"These settings fit (about {trial_need:.0f} MiB): " + "; ".join(labels)
            break
    raise LoraError(f"This run needs about {need:.0f} MiB of VRAM but only {free_mb:.0f} MiB is free; "
                    "it was not started, so it cannot spill into system memory", where="Training settings",
                    fix=fix)


def check_run(cfg: Any, model: Any, plan: Any, free_mb: float | None = None) -> float | None:
    """The check for a planned run on `model` (an LdmModel or DiffusersModel); None on CPU."""
    free_mb = free_vram_mb(model.device) if free_mb is None else free_mb
    if free_mb is None:
        return None
    targets = model.network_targets(cfg.network.train_unet, cfg.network.train_text_encoder)
    largest = max(s.bucket[0] * s.bucket[1] for s in plan.train)
    return check_vram(cfg, model.family, lora_param_counts(targets, cfg.network), largest, free_mb)
