"""LdmModel over the tiny real ldm/sgm models: text path, prediction, targets, gradients."""
from __future__ import annotations

import pytest
import torch

from lib_lora.config import NetworkConfig, TrainConfig
from lib_lora.models import ldm_text
from lib_lora.models.ldm_adapter import LdmModel
from lib_lora.networks import create_network
from lib_lora.webui.model_bridge import training_session
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
def test_checkpointing_gives_lora_params_gradients(webui, family):
    # in a training session, as a run: the WebUI leaves the UNet's parameters requiring grad
    with training_session(load_family(webui, family), webui.shared.opts, TrainConfig()) as model:
        _checkpointed_step_gives_gradients(model, family)
    assert all("forward" not in m.__dict__ for m in model.unet.modules())


def _checkpointed_step_gives_gradients(model, family):
    network = create_network(model.network_targets(True, True), NetworkConfig(dim=2, alpha=1.0))
    network.attach()
    try:
        for p in network.parameters():
            torch.nn.init.normal_(p, std=0.01)
        model.set_gradient_checkpointing(True)
        cond = model.encode_text(["a cat"], 1, 75)
        out = model.predict(torch.randn(1, 4, 8, 8), torch.tensor([100]), cond)
        out.float().pow(2).mean().backward()
        # SDXL's CLIP-L stops at the penultimate layer (as in the WebUI), so a LoRA on its last
        # layer never gets a gradient; sd-scripts writes it all the same (12 CLIP-L layers), so do
        # we. SD2's unused last block gets no LoRA at all (as in sd-scripts); everything else must
        unused = {"sdxl": "te1_text_model_encoder_layers_1_"}.get(family, "never")
        grads = {n: p.grad for n, p in network.named_parameters() if unused not in n.replace(".", "_")}
        missing = [n for n, g in grads.items() if g is None]
        assert not missing and sum(g.abs().sum() for g in grads.values()) > 0
        assert all(p.grad is None for p in model.unet.parameters())
    finally:
        model.set_gradient_checkpointing(False)
        network.detach()


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
    # SD2 stops at the penultimate block: like sd-scripts (a 23-layer CLIP), no keys for the last
    assert not any(k.startswith("lora_te_text_model_encoder_layers_1_") for k in sd2_keys)
    assert any(k.startswith("lora_te1_text_model_encoder_layers_1_") for k in sdxl_keys)


def _diffusers_keys(unet, encoders) -> set[str]:
    from lib_lora.networks.target import NetworkTarget
    targets = [NetworkTarget("lora_unet", unet, "diffusers", "unet")]
    targets += [NetworkTarget(prefix, te, "hf_clip", "text_encoder") for prefix, te in encoders]
    return set(create_network(targets, NetworkConfig(dim=2, alpha=1.0)).module_names())


def _hf_clip(width: int, layers: int):
    from transformers import CLIPTextConfig, CLIPTextModel
    return CLIPTextModel(CLIPTextConfig(hidden_size=width, intermediate_size=37, num_attention_heads=4,
                                        num_hidden_layers=layers, vocab_size=100))


@pytest.mark.parametrize("family", ["sd2", "sdxl"])
def test_sd2_and_sdxl_keys_match_the_diffusers_path(models, family):
    """The same architecture in diffusers form (SD2's text encoder without its unused last block,
    as diffusers and sd-scripts hold it) gives exactly the keys of the ldm/sgm path."""
    from diffusers import UNet2DConditionModel
    if family == "sd2":
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=48,
                                    attention_head_dim=8, use_linear_projection=True, norm_num_groups=32)
        encoders = [("lora_te", _hf_clip(48, 1))]
    else:
        unet = UNet2DConditionModel(sample_size=8, block_out_channels=(32, 64), layers_per_block=1,
                                    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                                    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
                                    cross_attention_dim=80, attention_head_dim=8, use_linear_projection=True,
                                    addition_embed_type="text_time", addition_time_embed_dim=8,
                                    projection_class_embeddings_input_dim=96, norm_num_groups=32)
        encoders = [("lora_te1", _hf_clip(32, 2)), ("lora_te2", _hf_clip(48, 2))]
    cfg = NetworkConfig(dim=2, alpha=1.0)
    ldm_keys = set(create_network(models[family].network_targets(True, True), cfg).module_names())
    assert ldm_keys == _diffusers_keys(unet, encoders)


def test_both_backends_share_the_webui_chunker(models):
    """text_chunks.chunk_token_ids (diffusers path) gives the ldm path's ids: comma backtrack,
    and as many chunks as the longest caption of the batch needs, up to max_token_length."""
    from lib_lora.models.text_chunks import chunk_token_ids
    enc = models["sd1"]._encoders[0]
    captions = [", ".join(["long tag"] * 40), "short"]
    ours = chunk_token_ids(ldm_text.unwrap(models["sd1"].sd_model.cond_stage_model).tokenizer, captions, 225)
    assert torch.equal(ours, ldm_text.token_batch(captions, enc, 225))
    assert ours.shape[:2] == (2, 2)                     # 2 chunks needed, 3 allowed
    first = ours[0, 0].tolist()
    assert first[first.index(enc.id_end) - 1] == enc.comma_id     # the cut moved back to a comma
    assert chunk_token_ids(ldm_text.unwrap(models["sd1"].sd_model.cond_stage_model).tokenizer,
                           ["short"], 225).shape == (1, 1, 77)
