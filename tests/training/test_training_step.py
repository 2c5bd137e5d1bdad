"""One step's math: gradient checkpointing, loss variants, captions, token chunks, the TE output cache."""
from __future__ import annotations

import math
import random

import pytest
import torch

from lib_lora.config import TrainConfig
from lib_lora.models.text_chunks import chunk_token_ids
from lib_lora.networks import create_network
from lib_lora.training import train
from lib_lora.training.noise import loss_weights, make_noise, rescale_zero_terminal_snr, snr
from lib_lora.training.step import TextEncoderCache, batch_captions, compute_loss, StepInputs

from training_fixtures import fast_config


def _lora_grads(model, checkpointing: bool) -> dict[str, torch.Tensor]:
    cfg = TrainConfig()
    cfg.network.dim, cfg.network.alpha = 4, 4.0
    torch.manual_seed(0)
    network = create_network(model.network_targets(True, True), cfg.network)
    for name, p in network.named_parameters():  # lora_up starts at zero: give every factor a value
        if p.requires_grad:
            torch.nn.init.normal_(p, std=0.1)
    network.attach()
    model.set_gradient_checkpointing(checkpointing)
    model.unet.train()  # diffusers checkpoints only in training mode
    try:
        cond = model.encode_text(["thing, red background", "thing, circle"], 1, 75)
        gen = torch.Generator().manual_seed(3)
        latents = torch.randn(2, 4, 8, 8, generator=gen)
        inputs = StepInputs(latents, [], [], torch.ones(2))
        noise, timesteps = torch.randn(latents.shape, generator=gen), torch.tensor([10, 700])
        compute_loss(model, cfg, inputs, cond, model.alphas_cumprod(), noise, timesteps).backward()
        return {n: p.grad.clone() for n, p in network.named_parameters() if p.requires_grad}
    finally:
        network.detach()
        model.set_gradient_checkpointing(False)
        model.unet.eval()


def test_gradient_checkpointing_gives_the_same_lora_gradients(tiny_model):
    plain = _lora_grads(tiny_model, False)
    checkpointed = _lora_grads(tiny_model, True)
    assert plain.keys() == checkpointed.keys() and len(plain) > 20
    unet_grads = [g for n, g in checkpointed.items() if "unet" in n]
    assert unet_grads and all(float(g.abs().max()) > 0 for g in unet_grads)  # every UNet LoRA param learns
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("options", [
    {"min_snr_gamma": 5.0}, {"noise_offset": 0.1, "adaptive_noise_scale": 0.05},
    {"multires_noise_iterations": 6, "multires_noise_discount": 0.3}, {"debiased_estimation": True},
    {"zero_terminal_snr": True, "min_snr_gamma": 5.0}, {"gradient_checkpointing": True},
    {"gradient_accumulation_steps": 2, "max_grad_norm": 0.5},
], ids=lambda o: ",".join(o))
def test_loss_options_train_with_finite_loss(tiny_model, dataset, tmp_path, options):
    result = train(fast_config(dataset, tmp_path / "out", **options), tiny_model)
    assert result.steps == (2 if options.get("gradient_accumulation_steps") else 4)
    assert all(math.isfinite(x) for x in result.losses)


def test_v_prediction_with_zero_terminal_snr_trains(tmp_path, dataset):
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1

    model = DiffusersModel(build_tiny_sd1(seed=0, prediction_type="v_prediction"))
    assert model.parameterization == "v"
    result = train(fast_config(dataset, tmp_path / "out", zero_terminal_snr=True, min_snr_gamma=5.0), model)
    assert all(math.isfinite(x) for x in result.losses)


def test_noise_and_weighting_formulas():
    ac = rescale_zero_terminal_snr(torch.linspace(0.999, 0.01, 1000))
    assert float(ac[-1]) == 0.0 and float(ac[0]) == pytest.approx(0.999, rel=1e-5)
    # SNR by hand from alphas_cumprod (a linear ramp 0.999 -> 0.01 over 1000 steps): SNR = a / (1 - a)
    t, alphas = torch.tensor([0, 500, 999]), torch.linspace(0.999, 0.01, 1000)
    a = [0.999 - step * (0.999 - 0.01) / 999 for step in (0, 500, 999)]      # 0.999, 0.504005, 0.01
    hand_snr = [x / (1 - x) for x in a]                                      # 999, 1.016149, 0.010101
    assert snr(t, alphas).tolist() == pytest.approx(hand_snr, rel=1e-4)
    # min-SNR-5: eps weight min(SNR, 5) / SNR; v weight min(SNR, 5) / (SNR + 1); debiased 1 / sqrt(SNR)
    assert loss_weights(t, alphas, "eps", min_snr_gamma=5.0).tolist() == pytest.approx([5 / 999, 1.0, 1.0], rel=1e-4)
    assert loss_weights(t, alphas, "v", min_snr_gamma=5.0).tolist() == pytest.approx(
        [5 / 1000, 1.016149 / 2.016149, 0.010101 / 1.010101], rel=1e-4)
    assert loss_weights(t, alphas, "eps", debiased=True).tolist() == pytest.approx(
        [999 ** -0.5, 1.016149 ** -0.5, 0.010101 ** -0.5], rel=1e-4)
    latents = torch.zeros(64, 4, 8, 8)
    plain = make_noise(latents, torch.Generator().manual_seed(0))
    offset = make_noise(latents, torch.Generator().manual_seed(0), noise_offset=0.5)
    # the offset adds one value per image and channel: the per-channel means spread out
    assert float(offset.mean(dim=(2, 3)).std()) > 3 * float(plain.mean(dim=(2, 3)).std())
    pyramid = make_noise(latents, torch.Generator().manual_seed(0), multires_iterations=4)
    assert float(pyramid.std()) == pytest.approx(1.0, abs=1e-4)


class _Item:
    def __init__(self, caption):
        self.caption = caption


class _Sample:
    def __init__(self, caption):
        self.item = _Item(caption)


def test_caption_shuffle_keeps_the_first_tags_or_the_part_before_the_separator():
    cfg = TrainConfig()
    cfg.dataset.shuffle_caption, cfg.dataset.keep_tokens = True, 2
    caption = "trigger, 1girl, a, b, c, d, e, f"
    seen = {batch_captions([_Sample(caption)], cfg, random.Random(i))[0] for i in range(20)}
    assert len(seen) > 5 and all(c.startswith("trigger, 1girl, ") for c in seen)
    assert all(sorted(c.split(", ")) == sorted(caption.split(", ")) for c in seen)
    cfg.dataset.keep_tokens_separator = "|||"
    caption = "trigger, blue eyes ||| a, b, c, d"
    seen = {batch_captions([_Sample(caption)], cfg, random.Random(i))[0] for i in range(20)}
    assert len(seen) > 3 and all(c.startswith("trigger, blue eyes, ") and "|||" not in c for c in seen)


@pytest.mark.parametrize("max_len", [75, 150, 225])
def test_captions_become_77_token_chunks(tiny_model, max_len):
    tok = tiny_model.pipe.tokenizer
    long_caption = ", ".join(f"tag{i}" for i in range(120))  # far more than 225 tokens
    ids = chunk_token_ids(tok, ["short", long_caption], max_len)
    n = max_len // 75
    assert ids.shape == (2, n, 77)
    assert (ids[:, :, 0] == tok.bos_token_id).all() and (ids[:, :, -1] == tok.eos_token_id).all()
    assert ids[0, 0, 2] == tok.eos_token_id  # 'short' is one token, then EOS padding
    cond = tiny_model.encode_text(["short", long_caption], 1, max_len)
    assert cond.context.shape == (2, 77 * n, 32)


class _CountingModel:
    def __init__(self, model):
        self.model, self.calls = model, 0

    def encode_text(self, *args):
        self.calls += 1
        return self.model.encode_text(*args)


def test_text_encoder_cache_reuses_outputs_only_when_enabled(tiny_model):
    counting = _CountingModel(tiny_model)
    cache = TextEncoderCache(True)
    first = cache.encode(counting, ["a", "b"], [(64, 64)] * 2, 1, 75)
    again = cache.encode(counting, ["b", "a"], [(64, 64)] * 2, 1, 75)
    assert counting.calls == 1
    torch.testing.assert_close(again.context[0], first.context[1])
    off = TextEncoderCache(False)
    off.encode(counting, ["a"], [(64, 64)], 1, 75)
    off.encode(counting, ["a"], [(64, 64)], 1, 75)
    assert counting.calls == 3


def test_text_encoder_cache_is_refused_while_the_text_encoder_trains(tiny_model, dataset, tmp_path):
    statuses = []

    class Status:
        def on_status(self, text):
            statuses.append(text)

    from lib_lora.training import TrainHooks

    hooks = type("H", (Status, TrainHooks), {})()
    train(fast_config(dataset, tmp_path / "out", cache_text_encoder_outputs=True), tiny_model, [hooks])
    assert any("not cached" in s and "frozen text encoder" in s for s in statuses)
