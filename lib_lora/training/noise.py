"""Noise, timesteps and loss weighting: pure tensor functions, no model, no I/O.

The formulas users know from sd-scripts, written from their papers:
noise offset (Guttenberg 2023) and its adaptive form, multires ("pyramid")
noise, zero-terminal-SNR rescaling (Lin et al. 2023), min-SNR-gamma weighting
(Hang et al. 2023) and debiased estimation (1/sqrt(SNR)).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rescale_zero_terminal_snr(alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Shift and scale sqrt(alpha_bar) so the last timestep has SNR exactly 0 (pure noise)."""
    sqrt_ab = alphas_cumprod.double().sqrt()
    first, last = sqrt_ab[0].clone(), sqrt_ab[-1].clone()
    sqrt_ab = (sqrt_ab - last) * first / (first - last)
    return (sqrt_ab ** 2).float()


def make_noise(latents: torch.Tensor, generator: torch.Generator | None, noise_offset: float = 0.0,
               adaptive_noise_scale: float = 0.0, multires_iterations: int = 0,
               multires_discount: float = 0.3) -> torch.Tensor:
    """Gaussian noise shaped like latents, with the optional offset / pyramid variants."""
    noise = torch.randn(latents.shape, generator=generator, device=latents.device, dtype=latents.dtype)
    b, c, h, w = latents.shape
    if noise_offset > 0:
        offset = noise_offset
        if adaptive_noise_scale > 0:
            # brighter/darker images get a larger offset: scale by the per-channel latent mean
            offset = offset + adaptive_noise_scale * latents.mean(dim=(2, 3), keepdim=True).abs()
        noise = noise + offset * torch.randn((b, c, 1, 1), generator=generator, device=latents.device,
                                             dtype=latents.dtype)
    if multires_iterations > 0:
        for i in range(1, multires_iterations + 1):
            scale = 2 ** i
            lh, lw = max(1, h // scale), max(1, w // scale)
            low = torch.randn((b, c, lh, lw), generator=generator, device=latents.device, dtype=latents.dtype)
            noise = noise + F.interpolate(low, size=(h, w), mode="bilinear") * multires_discount ** i
            if lh == 1 and lw == 1:
                break
        noise = noise / noise.std()
    return noise


def add_noise(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    ab = alphas_cumprod.to(latents.device)[timesteps].to(latents.dtype).view(-1, 1, 1, 1)
    return ab.sqrt() * latents + (1 - ab).sqrt() * noise


def velocity_target(latents: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor,
                    alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """v = sqrt(a) * noise - sqrt(1 - a) * x0 (Salimans & Ho 2022)."""
    ab = alphas_cumprod.to(latents.device)[timesteps].to(latents.dtype).view(-1, 1, 1, 1)
    return ab.sqrt() * noise - (1 - ab).sqrt() * latents


def snr(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor) -> torch.Tensor:
    ab = alphas_cumprod.to(timesteps.device)[timesteps].double()
    return (ab / (1 - ab).clamp_min(1e-12)).float()


def loss_weights(timesteps: torch.Tensor, alphas_cumprod: torch.Tensor, parameterization: str,
                 min_snr_gamma: float = 0.0, debiased: bool = False) -> torch.Tensor:
    """Per-sample weights (B,) for the MSE loss."""
    weights = torch.ones(timesteps.shape, dtype=torch.float32, device=timesteps.device)
    s = snr(timesteps, alphas_cumprod).clamp_min(1e-6)  # zero-terminal SNR makes the last step 0
    if min_snr_gamma > 0:
        clipped = torch.minimum(s, torch.full_like(s, min_snr_gamma))
        # for v-prediction the equivalent weight divides by SNR + 1 instead of SNR
        weights = weights * clipped / (s + 1 if parameterization == "v" else s)
    if debiased:
        weights = weights / s.sqrt()
    return weights


def diffusion_loss(pred: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    per_sample = F.mse_loss(pred.float(), target.float(), reduction="none").mean(dim=(1, 2, 3))
    return (per_sample * weights).mean()
