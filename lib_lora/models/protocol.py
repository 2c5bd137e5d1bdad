"""The protocol the trainer talks to: one small surface, two implementations.

`DiffusersModel` (models/diffusers_adapter.py) wraps a diffusers pipeline for
headless runs and the tiny built-in model; `LdmModel` (models/ldm_adapter.py)
wraps the ldm/sgm object the WebUI holds in `shared.sd_model`, duck-typed, with
no WebUI import. The training loop, evaluation and the CLI use only what is
declared here, so either backend drops in unchanged.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from ..networks.target import NetworkTarget   # what network_targets returns: the network's input


@dataclass
class Conditioning:
    """Text conditioning for a batch: what the UNet's cross-attention needs.

    context: (B, 77*k, C) hidden states; pooled/vector: (B, D) for SDXL, else None."""
    context: torch.Tensor
    vector: torch.Tensor | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> "Conditioning":
        vec = None if self.vector is None else self.vector.to(device, dtype)
        return Conditioning(self.context.to(device, dtype), vec, self.extra)

    def index(self, idx: Any) -> "Conditioning":
        vec = None if self.vector is None else self.vector[idx]
        return Conditioning(self.context[idx], vec, self.extra)


class TrainableModel(Protocol):
    family: str                      # one of checkpoint_io.FAMILIES: 'sd1' | 'sd2' | 'sdxl'
    parameterization: str            # 'eps' | 'v'
    device: torch.device
    dtype: torch.dtype               # dtype of the UNet weights
    name: str                        # shown in metadata (ss_sd_model_name)

    def network_targets(self, train_unet: bool, train_text_encoder: bool) -> list[NetworkTarget]: ...

    def alphas_cumprod(self) -> torch.Tensor:
        """(1000,) fp32 cumulative alphas of the DDPM noise schedule the model was trained with."""

    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels (B, 3, H, W) in [-1, 1] -> scaled latents (B, 4, H/8, W/8), no grad."""

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """scaled latents -> pixels in [-1, 1]."""

    def encode_text(self, captions: list[str], clip_skip: int, max_token_length: int,
                    sizes: list[tuple[int, int]] | None = None) -> Conditioning:
        """Captions -> conditioning, in 77-token chunks like the WebUI, with NO attention-emphasis
        parsing: '(azur lane)' reaches the encoder as written. `sizes` (h, w) feed SDXL's
        size conditioning. Gradients flow when text-encoder LoRA modules require grad."""

    def predict(self, noisy_latents: torch.Tensor, timesteps: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        """UNet output (eps or v per `parameterization`) for discrete timesteps 0..999."""

    def set_gradient_checkpointing(self, enabled: bool) -> None:
        """Checkpoint UNet blocks so that LoRA parameters inside them still get gradients."""

    def vae_fingerprint(self) -> str:
        """Short stable id of the VAE weights: part of the latent cache key."""

    def offload_parts(self) -> dict[str, list[nn.Module]]:
        """{'vae': [...], 'text_encoder': [...]}: the modules training.offload_after_caching may move
        to the CPU once latents (and text-encoder outputs) are cached."""
