"""End to end inside the WebUI stand-in, on SD2-v (ldm) and SDXL (sgm): a run through jobs
trains on the loaded model, gives it back bit for bit, writes files the stand-in Lora loads
with every key matched, and the LoRA has learned (the trainer's latent-space check)."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from lib_lora.config import TrainConfig
from lib_lora.webui.fingerprint import differences, fingerprint
from tests.webui.conftest import load_family

TRIGGER = "zkcat"
TARGET_RGB = (220, 40, 30)
SIZE = 64
REPEATS = 8          # 4 images x 8 / batch 2 = 16 steps: ratio ~0.67 where 0.8 is asked


def _dataset(root: str, family: str) -> str:
    """Red scenes with a white shape (the demo's concept), 64 px, trigger word first."""
    folder = os.path.join(root, f"data_{family}", f"{REPEATS}_{TRIGGER}")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        img = Image.new("RGB", (SIZE, SIZE), TARGET_RGB)
        x, y = (int(v) for v in rng.integers(8, SIZE - 24, 2))
        ImageDraw.Draw(img).ellipse((x, y, x + 16, y + 16), fill="white")
        img.save(os.path.join(folder, f"{i}.png"))
        with open(os.path.join(folder, f"{i}.txt"), "w", encoding="utf-8") as f:
            f.write(f"{TRIGGER}, red background, white circle")
    return os.path.dirname(folder)


def _config(train_dir: str, family: str) -> TrainConfig:
    cfg = TrainConfig()
    d, n, t, o = cfg.dataset, cfg.network, cfg.training, cfg.output
    d.train_dir, d.resolution, d.enable_bucket, d.shuffle_caption = train_dir, SIZE, False, False
    n.dim, n.alpha, n.train_text_encoder = 4, 4.0, True
    t.epochs, t.batch_size, t.optimizer, t.lr_scheduler, t.lr_warmup = 1, 2, "AdamW", "constant", 0.0
    t.unet_lr, t.text_encoder_lr, t.mixed_precision, t.min_snr_gamma = 1.5e-2, 1e-3, "no", 0.0
    o.output_name, o.save_state, o.tensorboard = f"fam_{family}", False, False
    return cfg


def _generate(webui, prompt: str, seeds: int = 1):
    p = webui.processing.StableDiffusionProcessingTxt2Img(prompt=prompt, steps=8, width=SIZE, height=SIZE,
                                                          seed=0, n_iter=seeds, cfg_scale=5.0)
    return webui.processing.process_images(p)


def _target_latent(model, train_dir: str) -> torch.Tensor:
    folder = os.path.join(train_dir, f"{REPEATS}_{TRIGGER}")
    images = [np.asarray(Image.open(os.path.join(folder, f)).convert("RGB"), dtype=np.float32)
              for f in sorted(os.listdir(folder)) if f.endswith(".png")]
    pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)     # the VAE samples its posterior: same target on every run
        return model.get_first_stage_encoding(model.encode_first_stage(pixels)).float().mean(0)


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_family_trains_restores_loads_and_learns(fresh_state, family):
    from tests.webui.test_pause import new_jobs, run_of, start
    webui = fresh_state
    sd_model = load_family(webui, family)
    train_dir = _dataset(webui.root, family)
    before, image_before = fingerprint(sd_model), _generate(webui, TRIGGER).images[0].tobytes()

    record = start(new_jobs(), _config(train_dir, family), background=False)
    assert record.state == "finished", (record.error, record.log[-3:])
    run = run_of(record)
    assert run.step == run.total_steps == 16 and run.loss == run.loss

    assert differences(before, fingerprint(sd_model)) == []
    assert _generate(webui, TRIGGER).images[0].tobytes() == image_before
    stem = os.path.splitext(os.path.basename(run_of(record).files[-1]))[0]
    webui.networks.unmatched_keys.clear()
    prompt = f"{TRIGGER}, red background"
    plain, with_lora = _generate(webui, prompt, 3), _generate(webui, f"{prompt} <lora:{stem}:1>", 3)
    assert webui.networks.unmatched_keys == []
    assert with_lora.images[0].tobytes() != plain.images[0].tobytes()
    # the OpenCLIP attention's q/k/v/out were merged into its fused in_proj_weight
    merged = [m for m in sd_model.modules() if isinstance(m, torch.nn.MultiheadAttention)
              and getattr(m, "network_weights_backup", None) is not None]
    assert merged and any(not torch.equal(m.in_proj_weight, m.network_weights_backup[0]) for m in merged)
    # learned: with the LoRA, the trigger's latents (same seeds) are closer to the training images'
    target = _target_latent(sd_model, train_dir)
    without = float(((plain.latents - target) ** 2).mean())
    learned = float(((with_lora.latents - target) ** 2).mean())
    assert learned < 0.8 * without, (learned, without)
    # the next plain generation restores the merged weights: the model is as it was
    assert _generate(webui, TRIGGER).images[0].tobytes() == image_before
