"""`python -m lib_lora demo --out DIR`: the whole path from images to a LoRA and a grid, in under a minute on CPU.

1) draws a small captioned dataset in <repeats>_<name> folders, 2) builds the
tiny seeded model and saves it as a diffusers folder, 3) trains a plain LoRA for
a few epochs (one file per epoch), 4) renders an epoch x weight grid, and
5) measures whether the LoRA learned: with it, images for the trigger prompt are
closer to the training images than without it (same seeds).
"""
from __future__ import annotations

import random
import time
from pathlib import Path

from PIL import Image, ImageDraw

from .config import TrainConfig
from .fileio import write_text, write_with

TRIGGER = "lrsq"
TARGET_RGB = (220, 40, 30)  # the colour every training image is painted in


def make_demo_dataset(root: Path, n_images: int = 8, size: int = 128, seed: int = 0) -> Path:
    """Red scenes with a white shape, captioned with the trigger word first (booru style)."""
    rng = random.Random(seed)
    concept = root / f"5_{TRIGGER}"
    concept.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        img = Image.new("RGB", (size, size), tuple(max(0, min(255, c + rng.randint(-12, 12))) for c in TARGET_RGB))
        draw = ImageDraw.Draw(img)
        x, y, r = rng.randint(16, size - 40), rng.randint(16, size - 40), rng.randint(8, 20)
        shape = rng.choice(["circle", "square"])
        box = (x, y, x + 2 * r, y + 2 * r)
        (draw.ellipse if shape == "circle" else draw.rectangle)(box, fill="white")
        write_with(concept / f"{i:03d}.png", lambda tmp, img=img: img.save(tmp, format="PNG"))
        write_text(concept / f"{i:03d}.txt", f"{TRIGGER}, red background, white {shape}, simple background")
    return root


def demo_config(out: Path, base_dir: Path) -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.pretrained = str(base_dir)
    cfg.dataset.train_dir = str(out / "dataset")
    cfg.dataset.resolution = 128
    cfg.dataset.min_bucket_reso = 64
    cfg.dataset.max_bucket_reso = 256
    cfg.dataset.bucket_reso_steps = 32
    cfg.dataset.trigger_word = TRIGGER
    cfg.network.dim, cfg.network.alpha = 8, 8.0
    cfg.training.epochs = 3
    cfg.training.batch_size = 2
    cfg.training.unet_lr, cfg.training.text_encoder_lr = 2e-3, 1e-3
    cfg.training.optimizer = "AdamW"
    cfg.training.lr_scheduler = "constant"
    cfg.training.min_snr_gamma = 0.0
    cfg.training.seed = 42
    cfg.output.output_dir = str(out / "lora")
    cfg.output.output_name = "demo_lora"
    cfg.sample.prompts = [f"{TRIGGER}, white circle", f"{TRIGGER}, white square, smile"]
    cfg.sample.width = cfg.sample.height = 128
    cfg.sample.steps = 12
    cfg.sample.cfg_scale = 5.0
    return cfg


def learned_distance(model, lora: Path | None, prompt: str, cfg: TrainConfig, seeds=(0, 1, 2)) -> float:
    """Mean squared distance between generated latents and the training images' mean latent.

    Measured in latent space: the tiny model's VAE has random weights, so its decoded colours
    mean nothing, but its latents are what the UNet (and the LoRA) learns to produce."""
    import torch

    from .dataset.scan import scan_dataset
    from .evaluation.render_diffusers import lora_applied
    from .training.latents import pixels_for
    from .training.batches import Sample

    items = scan_dataset(cfg.dataset.train_dir).items
    size = (cfg.sample.width, cfg.sample.height)
    pixels = torch.stack([pixels_for(Sample(i, "", 1, False, size)) for i in items])
    with torch.no_grad():
        target = model.encode_images(pixels).mean(0)
    distances = []
    with lora_applied(model, lora, 1.0):
        for seed in seeds:
            latents = model.pipe(prompt, num_inference_steps=cfg.sample.steps, guidance_scale=cfg.sample.cfg_scale,
                                 width=size[0], height=size[1], output_type="latent",
                                 generator=torch.Generator().manual_seed(seed)).images[0]
            distances.append(float(((latents - target) ** 2).mean()))
    return sum(distances) / len(distances)


def run_demo(out: Path, log=print) -> dict:
    from .evaluation.render_diffusers import render_epoch_weight_grid
    from .models.diffusers_adapter import load_diffusers_model
    from .models.tiny import build_tiny_sd1, save_pipeline
    from .training import train
    from .training.cli_hooks import PrintHooks

    started = time.time()
    out = Path(out).resolve()
    make_demo_dataset(out / "dataset")
    base_dir = save_pipeline(build_tiny_sd1(seed=0), out / "base_model")
    cfg = demo_config(out, base_dir)
    model = load_diffusers_model(base_dir)
    result = train(cfg, model, [PrintHooks(log)])
    prompt = cfg.sample.prompts[0]
    grid_path = render_epoch_weight_grid(model, [Path(f) for f in result.files], cfg.sample,
                                         out / "grid" / "demo_lora-grid.png")
    summary = {"dataset": str(out / "dataset"), "base_model": str(base_dir), "lora_files": result.files,
               "config": str(Path(cfg.output.output_dir) / f"{cfg.output.output_name}.toml"),
               "grid": str(grid_path), "distance_without": learned_distance(model, None, prompt, cfg),
               "distance_with": learned_distance(model, Path(result.files[-1]), prompt, cfg), "seconds": time.time() - started,
               "final_loss": result.final_loss}
    return summary


def print_summary(summary: dict, log=print) -> None:
    log("\nDemo finished in {:.1f} s".format(summary["seconds"]))
    log(f"  dataset:     {summary['dataset']}")
    log(f"  base model:  {summary['base_model']}  (diffusers folder)")
    log(f"  run config:  {summary['config']}")
    for f in summary["lora_files"]:
        log(f"  LoRA:        {f}")
    log(f"  grid:        {summary['grid']}")
    log(f"  learned?     distance of '{TRIGGER}' images to the training images (latent MSE, 3 seeds): "
        f"{summary['distance_without']:.1f} without the LoRA, {summary['distance_with']:.1f} with it")
