"""Headless rendering with a LoRA file: the CLI twin of the WebUI's `<lora:name:w>` grid.

A file is applied through our own network modules (so LoHa/LoKr/DoRA render
too), at a chosen weight, on the diffusers pipeline the run trained on; the
network is detached afterwards, leaving the pipeline unchanged.
"""
from __future__ import annotations

import contextlib
import re
from pathlib import Path

import torch
from PIL import Image

from ..config import NetworkConfig, SampleConfig
from ..networks import create_network, load_network_file
from .grid_image import labelled_grid


def network_config_for(tensors: dict[str, torch.Tensor]) -> NetworkConfig:
    """Infer algorithm, ranks and targets from a file's tensors (any of ours, sd-scripts' or LyCORIS')."""
    keys = list(tensors)
    cfg = NetworkConfig()
    if any(k.endswith(".hada_w1_a") for k in keys):
        cfg.algo = "loha"
    elif any(".lokr_" in k for k in keys):
        cfg.algo = "lokr"
    downs = {k: v for k, v in tensors.items() if k.endswith(("lora_down.weight", "hada_w1_b"))}
    convs = [v for v in downs.values() if v.dim() == 4 and v.shape[-1] == 3]
    if cfg.algo == "lora" and convs:
        cfg.algo = "locon"
    linear = [v for v in downs.values() if not (v.dim() == 4 and v.shape[-1] == 3)]
    if linear:
        cfg.dim = int(linear[0].shape[0])
    if convs:
        cfg.conv_dim = int(convs[0].shape[0])
    cfg.targets = "attn_ff_conv" if convs else "attn_ff"
    cfg.train_text_encoder = any(k.startswith("lora_te") for k in keys)
    cfg.train_unet = any(k.startswith("lora_unet") for k in keys)
    cfg.dora = any(k.endswith(".dora_scale") for k in keys)
    return cfg


@contextlib.contextmanager
def lora_applied(model, path: Path | None, weight: float):
    """Attach the file's network to `model` at `weight` for the duration of the block."""
    if path is None or weight == 0:
        yield
        return
    tensors, _ = load_network_file(path)
    cfg = network_config_for(tensors)
    network = create_network(model.network_targets(cfg.train_unet, cfg.train_text_encoder), cfg)
    network.load_trainable_state(tensors, strict=False)
    network.to(model.device)
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


def render_with_lora(model, path: Path | None, weight: float, prompt: str, sample: SampleConfig) -> Image.Image:
    with lora_applied(model, path, weight):
        return render(model, prompt, sample)


def epoch_label(path: Path) -> str:
    m = re.search(r"-(\d{6})$", path.stem)
    return f"epoch {int(m.group(1))}" if m else path.stem


def render_epoch_weight_grid(model, files: list[Path], sample: SampleConfig, out_path: Path,
                             progress=None) -> Path:
    """Columns: no LoRA, then every file; rows: prompts x weights. Same seed everywhere."""
    from ..fileio import write_with

    files = sorted(files, key=lambda p: p.name)
    weights = list(sample.grid_weights)
    prompts = list(sample.prompts) or ["a photo"]
    rows, row_labels = [], []
    total, done = len(prompts) * (1 + len(files) * len(weights)), 0
    for prompt in prompts:
        baseline = render(model, prompt, sample)
        done += 1
        for w in weights:
            row = [baseline]
            for f in files:
                row.append(render_with_lora(model, f, w, prompt, sample))
                done += 1
                if progress:
                    progress(done, total)
            rows.append(row)
            row_labels.append(f"w {w:g}" if len(prompts) == 1 else f"{prompt[:18]} | w {w:g}")
    grid = labelled_grid(rows, ["no LoRA"] + [epoch_label(f) for f in files], row_labels,
                         title=f"seed {sample.seed}, {sample.steps} steps")
    write_with(out_path, lambda tmp: grid.save(tmp, format="PNG"))
    return Path(out_path)
