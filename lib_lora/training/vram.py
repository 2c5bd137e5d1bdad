"""VRAM policy: before a run, compare what it will need with what is free, and say what fits.

Host-agnostic (it reads a config, the model's sizes and the plan; any host may call
check_run before it starts a run): the WebUI door calls it on the model it borrows.
The model already sits in VRAM, so the need is what training ADDS minus what
offloading after caching frees (lib_lora.training.memory, the estimator the plan prints
too, fitted to measured peaks at real shapes), plus the caching allocator's headroom.
When the run does not fit, every combination of the cheaper settings that apply to this
config (offloading after caching, gradient checkpointing, the text-encoder output cache,
an 8-bit optimizer, smaller batches with gradient accumulation) is estimated, and the
message names the one that fits with the fewest changes, preferring those that cost the
least quality and time. A run that does not fit must never start: NVIDIA's Windows
driver would otherwise spill it into system memory and train 10-50x slower without a
word. Free VRAM is measured with torch.cuda.mem_get_info; on CPU there is nothing to check.
"""
from __future__ import annotations

import dataclasses
import itertools
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import LoraError
from .memory import ALLOCATOR_HEADROOM, ModelSizes, estimate_need_mb, model_sizes
from .offload import check_offload, te_output_cache_usable

MIB = 2 ** 20


@dataclass
class Change:
    """One cheaper setting: its label, the options it sets, and its cost rank (lower: preferred)."""
    label: str
    training: dict[str, Any]
    network: dict[str, Any]
    cost: int


@dataclass
class Offer:
    changes: list[Change]
    config: Any
    need_mb: float

    def describe(self) -> str:
        return f"These settings fit (about {self.need_mb:.0f} MiB): " + "; ".join(c.label for c in self.changes)


def free_vram_mb(device: torch.device | str | None = None) -> float | None:
    """Free memory of `device` in MiB; None when it is not a CUDA device (nothing to check)."""
    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return None
    free, _total = torch.cuda.mem_get_info(device)
    return free / MIB


def need_mb(cfg: Any, sizes: ModelSizes, largest_bucket_px: int, n_captions: int = 0) -> float:
    """What the run needs beyond the loaded model, with the allocator's headroom on what it adds."""
    need = estimate_need_mb(cfg, sizes, largest_bucket_px, n_captions)
    return need * ALLOCATOR_HEADROOM if need > 0 else need


def cheaper_settings(cfg: Any, sizes: ModelSizes) -> list[Change]:
    """The changes that apply to this config, cheapest first."""
    t, n, d = cfg.training, cfg.network, cfg.dataset
    changes = []
    if not t.offload_after_caching and not d.color_aug and any(sizes.offloadable.values()):
        changes.append(Change("offload the VAE (and a cached text encoder) to the CPU after caching"
                              + (" with the latent cache on" if d.cache_latents == "off" else ""),
                              {"offload_after_caching": True}, {}, 1))
    if not t.gradient_checkpointing:
        changes.append(Change("gradient checkpointing on", {"gradient_checkpointing": True}, {}, 2))
    if n.train_text_encoder and n.train_unet:
        changes.append(Change("train the UNet only, with the text-encoder output cache on",
                              {"cache_text_encoder_outputs": True}, {"train_text_encoder": False}, 3))
    elif not n.train_text_encoder and not t.cache_text_encoder_outputs:
        frozen = dataclasses.replace(cfg, training=dataclasses.replace(t, cache_text_encoder_outputs=True))
        if te_output_cache_usable(frozen):
            changes.append(Change("text-encoder output cache on", {"cache_text_encoder_outputs": True}, {}, 3))
    if "8bit" not in t.optimizer.lower() and t.optimizer.lower() in ("adamw", "lion"):
        changes.append(Change(f"optimizer {t.optimizer}8bit", {"optimizer": f"{t.optimizer}8bit"}, {}, 4))
    batch = t.batch_size
    while batch > 1:
        batch //= 2
        accum = t.gradient_accumulation_steps * (t.batch_size // batch)
        changes.append(Change(f"batch size {batch} with gradient accumulation {accum}",
                              {"batch_size": batch, "gradient_accumulation_steps": accum}, {}, 5 + t.batch_size // batch))
    return changes


def _apply(cfg: Any, changes: list[Change]) -> Any:
    training = {k: v for c in changes for k, v in c.training.items()}
    network = {k: v for c in changes for k, v in c.network.items()}
    dataset = cfg.dataset
    if training.get("offload_after_caching") and dataset.cache_latents == "off":
        dataset = dataclasses.replace(dataset, cache_latents="memory")   # offloading needs cached latents
    return dataclasses.replace(cfg, training=dataclasses.replace(cfg.training, **training),
                               network=dataclasses.replace(cfg.network, **network), dataset=dataset)


def fitting_settings(cfg: Any, sizes: ModelSizes, largest_bucket_px: int, free_mb: float,
                     n_captions: int = 0) -> Offer | None:
    """The combination of cheaper settings that fits in `free_mb` with the fewest changes (then the
    cheapest); None when even all of them together do not fit."""
    options = cheaper_settings(cfg, sizes)
    batches = [c for c in options if "batch_size" in c.training]
    switches = [c for c in options if c not in batches]
    candidates = [list(subset) + ([batch] if batch else [])
                  for size in range(len(switches) + 1) for subset in itertools.combinations(switches, size)
                  for batch in [None, *batches]]
    candidates.sort(key=lambda changes: (len(changes), sum(c.cost for c in changes)))
    for changes in candidates[1:]:   # the first is no change at all
        trial = _apply(cfg, changes)
        check_offload(trial)   # every offer is a config the trainer accepts
        need = need_mb(trial, sizes, largest_bucket_px, n_captions)
        if need <= free_mb:
            return Offer(changes, trial, need)
    return None


def check_vram(cfg: Any, sizes: ModelSizes, largest_bucket_px: int, free_mb: float | None,
               n_captions: int = 0) -> float:
    """Return the estimated need in MiB; raise LoraError naming settings that fit when it does not."""
    need = need_mb(cfg, sizes, largest_bucket_px, n_captions)
    if free_mb is None or need <= free_mb:
        return need
    offer = fitting_settings(cfg, sizes, largest_bucket_px, free_mb, n_captions)
    fix = offer.describe() if offer else ("Lower the resolution or the network dim, or free VRAM (close other "
                                          "programs, unload other models, or use a smaller checkpoint)")
    raise LoraError(f"This run needs about {need:.0f} MiB of VRAM but only {free_mb:.0f} MiB is free; "
                    "it was not started, so it cannot spill into system memory", where="Training settings",
                    fix=fix)


def check_run(cfg: Any, model: Any, plan: Any, free_mb: float | None = None) -> float | None:
    """The check for a planned run on `model` (an LdmModel or DiffusersModel); None on CPU."""
    free_mb = free_vram_mb(model.device) if free_mb is None else free_mb
    if free_mb is None:
        return None
    largest = max(s.bucket[0] * s.bucket[1] for s in plan.train)
    need = check_vram(cfg, model_sizes(cfg, model), largest, free_mb, len(plan.train) + len(plan.reg))
    return max(need, 0.0)   # below 0 when offloading frees more than training adds
