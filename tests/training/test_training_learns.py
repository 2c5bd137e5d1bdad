"""The LoRA learns: a trigger word bound to solid-red images pulls generations toward them.

Measured in latent space (demo.learned_distance): the tiny model's VAE is random,
so decoded colours mean nothing, but its latents are what the UNet and the LoRA
learn to produce. Same prompt, same seeds, with and without the LoRA.
"""
from __future__ import annotations

import pytest

from lib_lora.demo import TRIGGER, learned_distance, make_demo_dataset
from lib_lora.training import train

from training_fixtures import fast_config


def test_trigger_word_is_learned(tiny_model, tmp_path):
    data = make_demo_dataset(tmp_path / "data", n_images=4, size=64)
    cfg = fast_config(data, tmp_path / "out", epochs=4, unet_lr=3e-3, text_encoder_lr=1e-3)
    cfg.network.dim, cfg.network.alpha = 8, 8.0
    cfg.sample.width = cfg.sample.height = 64
    cfg.sample.steps, cfg.sample.cfg_scale = 8, 5.0
    result = train(cfg, tiny_model)
    assert result.steps == 40  # 4 images x 5 repeats x 4 epochs / batch 2
    assert result.losses[-1] < result.losses[0]
    prompt = f"{TRIGGER}, white circle"
    without = learned_distance(tiny_model, None, prompt, cfg, seeds=(0, 1))
    with_lora = learned_distance(tiny_model, result.files[-1], prompt, cfg, seeds=(0, 1))
    assert with_lora < 0.75 * without, (with_lora, without)
    # the model is left as it was (the target's VAE sample varies a little between calls)
    assert learned_distance(tiny_model, None, prompt, cfg, seeds=(0, 1)) == pytest.approx(without, rel=0.01)
