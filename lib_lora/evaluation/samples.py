"""Sample images during training: the `sampler` callable that train() calls every N epochs.

It samples through the model protocol (encode_text / predict / decode_latents)
with a plain DDIM loop, so it works on every backend with the network still
attached as it trains (no reload, no copy). Images are saved beside the run as
`samples/<name>-e000003-p0.png` and returned for the tab's live gallery.
Grids for choosing an epoch use the WebUI's own sampler instead (webui/grid.py).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..config import SampleConfig
from ..fileio import write_with


def latent_shape(model, width: int, height: int) -> tuple[int, int, int]:
    """(channels, h, w) of the model's latents for an image size, measured on a blank image
    so any VAE (4-channel SD, 16-channel, other downscale factors) works."""
    probe = torch.zeros(1, 3, 64, 64, device=model.device)
    latents = model.encode_images(probe)
    factor = 64 // latents.shape[-1]
    return latents.shape[1], height // factor, width // factor


def to_pil(decoded: torch.Tensor) -> list[Image.Image]:
    pixels = ((decoded.float().clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(np.ascontiguousarray(p)) for p in pixels]


@torch.no_grad()
def ddim_sample(model, prompt: str, sample: SampleConfig, seed: int, clip_skip: int = 1,
                max_token_length: int = 75) -> Image.Image:
    """One image, eta = 0 DDIM with classifier-free guidance; eps or v prediction."""
    alphas = model.alphas_cumprod().float().cpu()
    channels, h, w = latent_shape(model, sample.width, sample.height)
    x = torch.randn((1, channels, h, w), generator=torch.Generator().manual_seed(seed))
    sizes = [(sample.height, sample.width)] * 2
    cond = model.encode_text([sample.negative_prompt, prompt], clip_skip, max_token_length, sizes)
    steps = torch.linspace(len(alphas) - 1, 0, sample.steps).round().long()
    for i, t in enumerate(steps):
        a_t = alphas[t]
        a_prev = alphas[steps[i + 1]] if i + 1 < len(steps) else torch.tensor(1.0)
        both = torch.cat([x, x]).to(model.device)
        out = model.predict(both, torch.full((2,), int(t), device=model.device), cond).float().cpu()
        uncond, conditioned = out.chunk(2)
        out = uncond + sample.cfg_scale * (conditioned - uncond)
        if getattr(model, "parameterization", "eps") == "v":
            eps, x0 = a_t.sqrt() * out + (1 - a_t).sqrt() * x, a_t.sqrt() * x - (1 - a_t).sqrt() * out
        else:
            eps, x0 = out, (x - (1 - a_t).sqrt() * out) / a_t.sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev).sqrt() * eps
    return to_pil(model.decode_latents(x.to(model.device)))[0]


def sample_path(folder: Path, name: str, epoch: int, index: int) -> Path:
    return Path(folder) / f"{name}-e{epoch:06d}-p{index}.png"


def make_sampler(model, out_dir: str | Path, name: str, clip_skip: int = 1, max_token_length: int = 75,
                 on_images: Callable[[int, list[Path]], None] | None = None):
    """sampler(network, sample_cfg, epoch) -> images; saved under <out_dir>/samples/."""
    folder = Path(out_dir) / "samples"

    def sampler(network, sample: SampleConfig, epoch: int) -> list[Image.Image]:
        was_training = network.training
        network.eval()          # dropout off while sampling; the multiplier stays as trained
        try:
            images = [ddim_sample(model, p, sample, sample.seed, clip_skip, max_token_length)
                      for p in (sample.prompts or [""])]
        finally:
            network.train(was_training)
        paths = [write_with(sample_path(folder, name, epoch, i), lambda tmp, im=im: im.save(tmp, format="PNG"))
                 for i, im in enumerate(images)]
        if on_images:
            on_images(epoch, paths)
        return images

    return sampler


def saved_samples(out_dir: str | Path, name: str) -> dict[int, list[Path]]:
    """{epoch: [sample paths]} of a run, from the files beside it."""
    found: dict[int, list[Path]] = {}
    for path in sorted((Path(out_dir) / "samples").glob(f"{name}-e*-p*.png")):
        stem = path.stem[len(name) + 2:]
        epoch_text, _, _ = stem.partition("-p")
        if epoch_text.isdigit():
            found.setdefault(int(epoch_text), []).append(path)
    return found
