"""Headless rendering with a LoRA file: the CLI twin of the WebUI's `<lora:name:w>` grid.

A file is applied through our own network modules (so LoHa/LoKr/DoRA render
too), at a chosen weight, on the diffusers pipeline the run trained on; the
network is detached afterwards, leaving the pipeline unchanged.
"""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from PIL import Image

from ..config import SampleConfig
from ..networks import create_network, load_network_file
from ..networks.detect import conv3x3_keys, network_config_for


def load_file_network(model, path: Path):
    """A network shaped like the file's modules (algorithm and ranks read from the file) on
    `model`, holding the file's tensors, on the model's device; not attached yet."""
    tensors, _ = load_network_file(path)
    cfg = network_config_for(tensors, conv3x3_keys(model.network_targets(True, False)))
    network = create_network(model.network_targets(cfg.train_unet, cfg.train_text_encoder), cfg)
    network.load_trainable_state(tensors, strict=False)
    network.to(model.device)
    return network


@contextlib.contextmanager
def lora_applied(model, path: Path | None, weight: float):
    """Attach the file's network to `model` at `weight` for the duration of the block."""
    if path is None or weight == 0:
        yield
        return
    network = load_file_network(model, path)
    network.set_multiplier(weight)
    network.attach()
    try:
        yield
    finally:
        network.detach()


@torch.no_grad()
def render(model, prompt: str, sample: SampleConfig, seed: int | None = None) -> Image.Image:
    pipe = model.pipe
    generator = torch.Generator(device="cpu").manual_seed(sample.seed if seed is None else seed)
    return pipe(prompt, negative_prompt=sample.negative_prompt or None, num_inference_steps=sample.steps,
                guidance_scale=sample.cfg_scale, width=sample.width, height=sample.height,
                generator=generator).images[0]


class AttachedLoraRenderer:
    """Renders grid cells keeping the current file's network attached: between weights only the
    multiplier changes (no reload), and the file is loaded once per column."""

    def __init__(self, model, sample: SampleConfig):
        self.model, self.sample = model, sample
        self.path: Path | None = None
        self.network = None

    def _use(self, path: Path | None) -> None:
        if path == self.path:
            return
        self.close()
        if path is not None:
            network = load_file_network(self.model, path)
            network.attach()
            self.network = network
        self.path = path

    def __call__(self, prompt: str, path: Path | None, weight: float, seed: int) -> Image.Image:
        self._use(path if weight != 0 else None)
        if self.network is not None:
            self.network.set_multiplier(weight)
        return render(self.model, prompt, self.sample, seed)

    def close(self) -> None:
        if self.network is not None:
            self.network.detach()
        self.network, self.path = None, None


def render_epoch_weight_grid(model, files: list[Path], sample: SampleConfig, out_path: Path,
                             progress=None) -> Path:
    """Columns: no LoRA, then every file; rows: prompts x weights. Same seed everywhere."""
    from .epoch_grid import GridSpec, compose_grid, render_grid_cells, save_grid

    spec = GridSpec(sorted((Path(f) for f in files), key=lambda p: p.name), list(sample.prompts) or ["a photo"],
                    list(sample.grid_weights), sample.seed, title=f"seed {sample.seed}, {sample.steps} steps")
    renderer = AttachedLoraRenderer(model, sample)
    try:
        cells = render_grid_cells(spec, renderer, (lambda d, t, _msg: progress(d, t)) if progress else None)
    finally:
        renderer.close()
    return Path(save_grid(compose_grid(spec, cells), out_path))
