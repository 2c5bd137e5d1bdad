"""One training step's math: captions -> conditioning, latents -> noisy latents -> loss.

Separated from the loop so validation uses the very same path with fixed noise
and timesteps, and so the loop stays readable.
"""
from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from ..config import TrainConfig
from ..dataset.captions import process_caption
from . import noise as N
from .batches import Sample


@dataclass
class StepInputs:
    latents: torch.Tensor          # (B, 4, h, w) fp32
    captions: list[str]
    sizes: list[tuple[int, int]]   # (h, w) per sample, SDXL size conditioning
    loss_scale: torch.Tensor       # (B,) prior_loss_weight for regularization images, else 1


def batch_captions(batch: list[Sample], cfg: TrainConfig, rng: random.Random) -> list[str]:
    d = cfg.dataset
    return [process_caption(s.item.caption, shuffle=d.shuffle_caption, keep_tokens=d.keep_tokens,
                            keep_tokens_separator=d.keep_tokens_separator,
                            tag_dropout_rate=d.caption_tag_dropout_rate,
                            caption_dropout_rate=d.caption_dropout_rate, rng=rng) for s in batch]


class TextEncoderCache:
    """Caches conditioning per caption when the TE is frozen and captions never change."""

    def __init__(self, enabled: bool):
        self.enabled = enabled
        self._store: dict[tuple, object] = {}

    def encode(self, model, captions, sizes, clip_skip, max_len):
        if not self.enabled:
            return model.encode_text(captions, clip_skip, max_len, sizes)
        missing = [i for i, key in enumerate(zip(captions, sizes)) if key not in self._store]
        if missing:
            with torch.no_grad():
                cond = model.encode_text([captions[i] for i in missing], clip_skip, max_len,
                                         [sizes[i] for i in missing])
            for j, i in enumerate(missing):
                self._store[(captions[i], sizes[i])] = cond.index(slice(j, j + 1))
        parts = [self._store[key] for key in zip(captions, sizes)]
        if len({p.context.shape[1] for p in parts}) > 1:
            # captions of different chunk counts (the WebUI sizes a batch by its longest caption):
            # encoded together they get the same count, which cached single rows cannot give
            with torch.no_grad():
                return model.encode_text(captions, clip_skip, max_len, sizes)
        return _stack_conditioning(parts)


def _stack_conditioning(parts):
    from ..models.protocol import Conditioning

    ctx = torch.cat([p.context for p in parts])
    vec = None if parts[0].vector is None else torch.cat([p.vector for p in parts])
    extra = {k: torch.cat([p.extra[k] for p in parts]) for k in parts[0].extra}
    return Conditioning(ctx, vec, extra)


def draw_noise(latents: torch.Tensor, generator: torch.Generator, t, n_timesteps: int,
               rows: list[int] | None = None, batch_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise (B, 4, h, w) and timesteps (B,) for a batch's latents.

    In a data-parallel run each rank holds `rows` of a global batch of `batch_size`: the
    draws are made for the whole batch and cut to this rank's rows, so together the ranks
    use exactly the noise one process would (multires noise is normalised per shard)."""
    full = latents
    if rows is not None and batch_size is not None and batch_size != latents.shape[0]:
        full = latents.new_zeros((batch_size, *latents.shape[1:]))
        full[rows] = latents
    full = full.to(generator.device, torch.float32)
    noise = N.make_noise(full, generator, t.noise_offset, t.adaptive_noise_scale,
                         t.multires_noise_iterations, t.multires_noise_discount)
    timesteps = torch.randint(0, n_timesteps, (full.shape[0],), generator=generator, device=full.device)
    if full.shape[0] != latents.shape[0]:
        noise, timesteps = noise[rows], timesteps[rows]
    return noise, timesteps


def compute_loss(model, cfg: TrainConfig, inputs: StepInputs, cond, alphas_cumprod: torch.Tensor,
                 noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
    """Diffusion loss for one batch, given its noise and timesteps (draw_noise, or fixed for validation)."""
    t = cfg.training
    latents = inputs.latents.to(model.device, torch.float32)
    noise, timesteps = noise.to(latents.device), timesteps.to(latents.device)
    noisy = N.add_noise(latents, noise, timesteps, alphas_cumprod)
    pred = model.predict(noisy, timesteps, cond)
    if model.parameterization == "v":
        target = N.velocity_target(latents, noise, timesteps, alphas_cumprod)
    else:
        target = noise
    weights = N.loss_weights(timesteps, alphas_cumprod, model.parameterization, t.min_snr_gamma,
                             t.debiased_estimation)
    return N.diffusion_loss(pred, target, weights * inputs.loss_scale.to(weights.device))
