"""Helpers for the training tests: the tiny model at 64 px, small datasets, a fast config.

Every run here trains on 8x8 latents for a handful of steps, so each takes about a
second on a loaded 2-core CPU. The model is built once per session; every test
checks that training leaves it as it was (train() always detaches the network).
"""
from __future__ import annotations

import random
from pathlib import Path

import torch
from PIL import Image

from lib_lora.config import TrainConfig

SIZE = 64


def write_dataset(root: Path, folder: str = "2_thing", n_images: int = 4, colour=None, seed: int = 0,
                  caption: str = "thing, red background, circle, simple background") -> Path:
    """n distinct 64 px images with captions in root/folder; returns root."""
    rng = random.Random(seed)
    concept = root / folder
    concept.mkdir(parents=True, exist_ok=True)
    for i in range(n_images):
        base = colour or tuple(rng.randint(0, 255) for _ in range(3))
        img = Image.new("RGB", (SIZE, SIZE), base)
        x, y = rng.randint(0, SIZE - 16), rng.randint(0, SIZE - 16)
        img.paste((255, 255, 255), (x, y, x + 16, y + 16))
        img.save(concept / f"{i:03d}.png")
        (concept / f"{i:03d}.txt").write_text(caption, encoding="utf-8")
    return root


def fast_config(train_dir: Path, out_dir: Path, **training) -> TrainConfig:
    cfg = TrainConfig()
    cfg.dataset.train_dir = str(train_dir)
    cfg.dataset.resolution = SIZE
    cfg.dataset.min_bucket_reso = SIZE
    cfg.dataset.max_bucket_reso = 2 * SIZE
    cfg.dataset.bucket_reso_steps = 32
    cfg.network.dim, cfg.network.alpha = 4, 4.0
    t = cfg.training
    t.epochs, t.batch_size, t.optimizer, t.lr_scheduler = 1, 2, "AdamW", "constant"
    t.unet_lr, t.text_encoder_lr, t.min_snr_gamma, t.mixed_precision = 1e-3, 5e-4, 0.0, "no"
    for key, value in training.items():
        setattr(t, key, value)
    cfg.output.output_dir = str(out_dir)
    cfg.output.output_name = "t"
    cfg.output.tensorboard = False
    return cfg



def unet_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.unet.state_dict().items()}
