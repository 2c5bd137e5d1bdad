"""VRAM policy: before a run, compare what it will need with what is free, and say what fits.

The WebUI's model already sits in VRAM, so the need is what training ADDS minus
what offloading after caching frees (lib_lora.training.memory, the estimator the
plan prints too). The figures are rough (good to a factor ~1.5); the check
refuses only when even the estimate does not fit, and then names the first
cheaper settings that would. A run that does not fit must never start: NVIDIA's
Windows driver would otherwise spill it into system memory and train 10-50x
slower without a word. Free VRAM is measured with torch.cuda.mem_get_info; on
CPU there is nothing to check.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from lib_lora.errors import LoraError
from lib_lora.training.memory import estimate_need_mb, model_sizes
from lib_lora.training.offload import check_offload

MIB = 2 ** 20


def free_vram_mb(device: torch.device | str | None = None) -> float | None:
    """Free memory of `device` in MiB; None when it is not a CUDA device (nothing to check)."""
    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free / MIB


def _variants(cfg: Any, offloadable: dict[str, int]):
    """Cheaper settings, each adding to the one before, in the order users prefer them: keep
    quality first (offloading after caching costs seconds, checkpointing some time), then the
    text encoder, then the optimizer, then smaller batches with gradient accumulation (same
    effective batch)."""
    t, n, d = cfg.training, cfg.network, cfg.dataset
    training: dict[str, Any] = {}
    network: dict[str, Any] = {}
    labels: list[str] = []
    if not t.offload_after_caching and not d.color_aug and any(offloadable.values()):
        training["offload_after_caching"] = True
        labels.append("offload the VAE (and a cached text encoder) to the CPU after caching"
                      + (" with the latent cache on" if d.cache_latents == "off" else ""))
        yield list(labels), training, network
    if not t.gradient_checkpointing:
        training = {**training, "gradient_checkpointing": True}
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


def _trial(cfg: Any, training: dict[str, Any], network: dict[str, Any]) -> Any:
    dataset = cfg.dataset
    if training.get("offload_after_caching") and dataset.cache_latents == "off":
        dataset = dataclasses.replace(dataset, cache_latents="memory")   # offloading needs cached latents
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **training),
                               network=dataclasses.replace(cfg.network, **network), dataset=dataset)


def check_vram(cfg: Any, family: str, counts: dict[str, int], largest_bucket_px: int,
               free_mb: float | None, offloadable: dict[str, int] | None = None, width_scale: float = 1.0) -> float:
    """Return the estimated need in MiB; raise LoraError naming settings that fit when it does not.
    offloadable: bytes of the parts offload_after_caching would move ('vae', 'text_encoder');
    width_scale: training.memory.ModelSizes.width_scale of the model."""
    offloadable = offloadable or {}
    need = estimate_need_mb(cfg, family, counts, largest_bucket_px, offloadable, width_scale)
    if free_mb is None or need <= free_mb:
        return need
    fix = ("Lower the resolution or the network dim, or free VRAM (close other programs, unload other "
           "models, or use a smaller checkpoint)")
    for labels, training, network in _variants(cfg, offloadable):
        trial = _trial(cfg, training, network)
        check_offload(trial)   # every offer is a config the trainer accepts
        trial_need = estimate_need_mb(trial, family, counts, largest_bucket_px, offloadable, width_scale)
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
    sizes = model_sizes(cfg, model)
    largest = max(s.bucket[0] * s.bucket[1] for s in plan.train)
    need = check_vram(cfg, model.family, sizes.lora_params, largest, free_mb, sizes.offloadable, sizes.width_scale)
    return max(need, 0.0)   # below 0 when offloading frees more than training adds
