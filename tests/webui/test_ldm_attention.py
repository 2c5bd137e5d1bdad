"""Attention inside the WebUI: LdmModel.set_attention runs the UNet's and the VAE's ldm/sgm attention
through scaled_dot_product_attention, with the stock ldm forward's outputs and LoRA gradients; a
run honours `training.sdpa`, and afterwards the WebUI's own optimization is back and the model
is bit-exact."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F

from lib_lora.config import NetworkConfig, TrainConfig
from lib_lora.models import ldm_attention
from lib_lora.networks import create_network
from lib_lora.webui.fingerprint import differences, fingerprint
from lib_lora.webui.model_bridge import training_session
from tests.webui.conftest import load_family
from tests.webui.test_train_families import _config, _dataset


@pytest.fixture
def sdpa_calls(monkeypatch) -> list[tuple]:
    """Counts the calls of torch's scaled_dot_product_attention made by the SDPA forwards (query
    shape per call); torch's own MultiheadAttention in the text encoders is not counted."""
    calls: list[tuple] = []
    real = F.scaled_dot_product_attention

    def counted(q, k, v, *args, **kwargs):
        calls.append(tuple(q.shape))
        return real(q, k, v, *args, **kwargs)

    monkeypatch.setattr(ldm_attention, "F", types.SimpleNamespace(scaled_dot_product_attention=counted))
    return calls


def attention_modules(sd_model) -> tuple[list, list]:
    unet = [m for m in sd_model.model.diffusion_model.modules() if ldm_attention.is_cross_attention(m)]
    vae = [m for m in sd_model.first_stage_model.modules() if ldm_attention.is_vae_attention(m)]
    return unet, vae


def run_unet(model, network, cond):
    """UNet output and the LoRA gradients of a fixed loss, with a fixed input."""
    latents = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5))
    network.zero_grad(set_to_none=True)
    out = model.predict(latents, torch.tensor([10, 700]), cond)
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


def encode(model, pixels):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(2)          # the VAE samples its posterior
        return model.encode_images(pixels)


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_sdpa_forwards_give_the_stock_outputs_and_lora_gradients(fresh_state, family, sdpa_calls):
    sd_model = load_family(fresh_state, family)
    unet_attention, vae_attention = attention_modules(sd_model)
    encoder_attention = [m for m in vae_attention if any(m is e for e in sd_model.first_stage_model.encoder.modules())]
    assert unet_attention and encoder_attention
    pixels = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with training_session(sd_model, fresh_state.shared.opts, TrainConfig()) as model:
        torch.manual_seed(0)
        network = create_network(model.network_targets(True, False), NetworkConfig(dim=4, alpha=4.0))
        for p in network.parameters():          # lora_up starts at zero: give every factor a value
            torch.nn.init.normal_(p, std=0.1)
        network.attach()
        try:
            cond = model.encode_text(["a cat", "shimakaze"], 1, 75, sizes=[(64, 64), (64, 48)])
            model.set_attention(False)          # the stock ldm math: the session undid the WebUI's
            ref, ref_grads = run_unet(model, network, cond)
            ref_latent = encode(model, pixels)
            assert sdpa_calls == []
            model.set_attention(True)
            mine, mine_grads = run_unet(model, network, cond)
            assert len(sdpa_calls) == len(unet_attention)          # each module once per forward
            latent = encode(model, pixels)
            assert len(sdpa_calls) == len(unet_attention) + len(encoder_attention)
        finally:
            network.detach()
    assert rel_err(mine, ref) < 1e-5
    assert rel_err(latent, ref_latent) < 1e-5
    assert mine_grads.keys() == ref_grads.keys() and len(ref_grads) > 20
    assert any("to_q" in n for n in ref_grads)   # the projections around the attention learn
    for name, grad in ref_grads.items():
        assert float(grad.abs().max()) > 0, name
        assert rel_err(mine_grads[name], grad) < 1e-4, f"{name}: {rel_err(mine_grads[name], grad):.2e}"
    assert not any("forward" in m.__dict__ for m in sd_model.modules())


@pytest.mark.parametrize("sdpa", [True, False])
def test_a_run_honours_training_sdpa_and_gives_the_webui_its_optimization_back(fresh_state, sdpa, sdpa_calls):
    from tests.webui.test_pause import new_jobs, start
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    from ldm.modules.attention import CrossAttention
    optimized = CrossAttention.forward
    assert webui.sd_hijack.current_optimizer == "sdp"        # the WebUI's own, class-wide
    before = fingerprint(sd_model)
    cfg = _config(_dataset(webui.root, "sd1"), "sd1")
    cfg.network.train_text_encoder, cfg.training.max_train_steps, cfg.training.sdpa = False, 2, sdpa
    cfg.output.output_name = f"attention_{sdpa}"
    record = start(new_jobs(), cfg, background=False)
    assert record.state == "finished", (record.error, record.log[-3:])
    unet_attention, _ = attention_modules(sd_model)
    # forward and the recomputation-free backward: each UNet attention module once per step
    assert (len(sdpa_calls) >= 2 * len(unet_attention)) if sdpa else sdpa_calls == []
    assert webui.sd_hijack.current_optimizer == "sdp" and CrossAttention.forward is optimized
    assert differences(before, fingerprint(sd_model)) == []


def test_masks_mean_what_they_mean_in_ldm(fresh_state):
    """ldm's mask: True = attend to this key (the others are filled with -max)."""
    from ldm.modules.attention import CrossAttention
    torch.manual_seed(0)
    attn = CrossAttention(query_dim=16, context_dim=12, heads=2, dim_head=8).eval()
    x, context = torch.randn(2, 10, 16), torch.randn(2, 7, 12)
    mask = torch.tensor([[True] * 7, [True] * 3 + [False] * 4])
    forward = ldm_attention.cross_attention_forward(attn)
    fresh_state.sd_hijack.undo_optimizations()      # the stock forward (the WebUI's ignores masks)
    try:
        with torch.no_grad():
            mine, stock = forward(x, context, mask), CrossAttention.forward(attn, x, context, mask)
            unmasked = CrossAttention.forward(attn, x, context)
    finally:
        fresh_state.sd_hijack.apply_optimizations()
    assert rel_err(mine, stock) < 1e-5
    assert rel_err(mine[1], unmasked[1]) > 1e-3              # the mask mattered
