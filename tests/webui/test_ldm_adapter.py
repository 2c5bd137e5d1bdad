"""LdmModel over the tiny real ldm/sgm models: text path, prediction, targets, gradients."""
from __future__ import annotations

import pytest
import torch

from lib_lora.config import NetworkConfig
from lib_lora.models import ldm_text
from lib_lora.models.ldm_adapter import LdmModel
from lib_lora.networks import create_network
from tests.webui.conftest import load_family


@pytest.fixture(scope="module")
def models(webui):
    return {family: LdmModel(load_family(webui, family)) for family in ("sd1", "sd2", "sdxl")}


def test_families_and_parameterization(models):
    assert [(m.family, m.parameterization) for m in models.values()] == [
        ("sd1", "eps"), ("sd2", "v"), ("sdxl", "eps")]
    assert models["sd1"].alphas_cumprod().shape == (1000,)


def test_booru_brackets_reach_the_encoder_as_written(models):
    """No emphasis parsing: '(azur lane)' is text, encoded exactly like the raw tokens."""
    model = models["sd1"]
    caption = "shimakaze (azur lane), 1girl"
    raw = ldm_text.unwrap(model.sd_model.cond_stage_model)
    ids = raw.tokenizer(caption, add_special_tokens=False)["input_ids"]
    assert raw.tokenizer.convert_tokens_to_ids("(") in ids or any("(" in t for t in raw.tokenizer.convert_ids_to_tokens(ids))
    framed = [raw.tokenizer.bos_token_id] + ids + [raw.tokenizer.eos_token_id] * (76 - len(ids))
    with torch.no_grad():
        expected = raw.transformer(input_ids=torch.tensor([framed])).last_hidden_state
        got = model.encode_text([caption], clip_skip=1, max_token_length=75).context
    assert torch.equal(got, expected)
    with torch.no_grad():
        plain = model.encode_text(["shimakaze azur lane, 1girl"], 1, 75).context
    assert not torch.equal(got, plain)


def test_clip_skip_uses_penultimate_layer_with_final_norm(models):
    model = models["sd1"]
    raw = ldm_text.unwrap(model.sd_model.cond_stage_model)
    with torch.no_grad():
        got = model.encode_text(["a cat"], clip_skip=2, max_token_length=75).context
        tokens = ldm_text.token_batch(["a cat"], model._encoders[0], 75)[:, 0]
        out = raw.transformer(input_ids=tokens, output_hidden_states=True)
        expected = raw.transformer.text_model.final_layer_norm(out.hidden_states[-2])
    assert torch.equal(got, expected)


def test_chunks_follow_the_webui(models):
    enc = models["sd1"]._encoders[0]
    comma = enc.comma_id
    ids = [1] * 70 + [comma] + [2] * 10
    chunks = ldm_text.split_into_chunks(ids, comma)
    assert [len(c) for c in chunks] == [71, 10]               # words after the comma move on
    assert ldm_text.split_into_chunks([3] * 80, comma)[0] == [3] * 75
    long_caption = ", ".join(["long tag"] * 60)
    with torch.no_grad():
        cond = models["sd1"].encode_text([long_caption, "short"], 1, max_token_length=225)
    assert cond.context.shape[1] % 77 == 0 and cond.context.shape[1] > 77


def test_sd2_open_clip_pads_with_zero_and_predicts(models):
    model = models["sd2"]
    tokens = ldm_text.token_batch(["a cat"], model._encoders[0], 75)[0, 0].tolist()
    end = tokens.index(model._encoders[0].id_end)
    assert set(tokens[end + 1:]) == {0}
    with torch.no_grad():
        cond = model.encode_text(["a cat"], 2, 75)
        out = model.predict(torch.randn(1, 4, 8, 8), torch.tensor([10]), cond)
    assert cond.context.shape == (1, 77, 48) and out.shape == (1, 4, 8, 8)


def test_sdxl_crossattn_and_per_sample_size_vector(models):
    model = models["sdxl"]
    with torch.no_grad():
        cond = model.encode_text(["a cat", "a dog"], 1, 75, sizes=[(512, 512), (768, 512, 32, 0)])
        out = model.predict(torch.randn(2, 4, 8, 8), torch.tensor([10, 20]), cond)
    assert cond.context.shape == (2, 77, 80) and cond.vector.shape == (2, 96)
    assert not torch.equal(cond.vector[0, 48:], cond.vector[1, 48:])    # sizes differ per sample
    assert out.shape == (2, 4, 8, 8)
    with torch.no_grad():
        webui_cond = model.sd_model.get_learned_conditioning(["a cat"])
    assert webui_cond["crossattn"].shape[-1] == cond.context.shape[-1]
    assert webui_cond["vector"].shape[-1] == cond.vector.shape[-1]


@pytest.mark.parametrize("family", ["sd1", "sd2", "sdxl"])
def test_checkpointing_gives_lora_params_gradients(models, family):
    model = models[family]
    network = create_network(model.network_targets(True, True), NetworkConfig(dim=2, alpha=1.0))
    network.attach()
    try:
        for p in network.parameters():
            torch.nn.init.normal_(p, std=0.01)
        model.set_gradient_checkpointing(True)
        cond = model.encode_text(["a cat"], 1, 75)
        out = model.predict(torch.randn(1, 4, 8, 8), torch.tensor([100]), cond)
        out.float().pow(2).mean().backward()
        # SD2's encoder and SDXL's CLIP-L stop at the penultimate layer (as in the WebUI), so a
        # LoRA on their last layer never gets a gradient; everything else must
        unused = {"sd2": "te_text_model_encoder_layers_1_", "sdxl": "te1_text_model_encoder_layers_1_"}.get(
            family, "never")
        grads = {n: p.grad for n, p in network.named_parameters() if unused not in n.replace(".", "_")}
        missing = [n for n, g in grads.items() if g is None]
        assert not missing and sum(g.abs().sum() for g in grads.values()) > 0
        assert all(p.grad is None for p in model.unet.parameters())
    finally:
        model.set_gradient_checkpointing(False)
        network.detach()
    assert all("forward" not in m.__dict__ for m in model.unet.modules())


def test_lora_keys_match_the_diffusers_path(models):
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1
    cfg = NetworkConfig(dim=2, alpha=1.0)
    ldm_keys = set(create_network(models["sd1"].network_targets(True, True), cfg).module_names())
    diffusers = DiffusersModel(build_tiny_sd1())
    diffusers_keys = set(create_network(diffusers.network_targets(True, True), cfg).module_names())
    assert ldm_keys and ldm_keys == diffusers_keys


def test_sdxl_and_sd2_targets_use_webui_names(models):
    sdxl_keys = create_network(models["sdxl"].network_targets(True, True), NetworkConfig(dim=2)).module_names()
    assert any(k.startswith("lora_unet_input_blocks_") for k in sdxl_keys)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_0_") for k in sdxl_keys)
    assert any(k.startswith("lora_te2_text_model_encoder_layers_0_self_attn_q_proj") for k in sdxl_keys)
    sd2_keys = create_network(models["sd2"].network_targets(True, True), NetworkConfig(dim=2)).module_names()
    assert "lora_te_text_model_encoder_layers_0_mlp_fc1" in sd2_keys
