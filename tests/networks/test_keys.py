"""Key names: golden lists per family, ldm <-> diffusers round trips, the WebUI's own table."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lib_lora.config import NetworkConfig
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import create_network, keys

DATA = Path(__file__).parent / "data"


def golden(name: str) -> list[str]:
    return (DATA / name).read_text(encoding="utf-8").split()


def network_keys(network_targets, **cfg) -> list[str]:
    return sorted(create_network(network_targets, NetworkConfig(**cfg)).module_names())


def test_sd1_unet_golden(sd1_unet):
    assert network_keys([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")], algo="locon") == \
        golden("sd1_unet_locon.txt")


def test_sdxl_unet_golden(sdxl_unet):
    assert network_keys([NetworkTarget("lora_unet", sdxl_unet, "diffusers", "unet")], algo="locon") == \
        golden("sdxl_unet_locon.txt")


def test_text_encoder_golden(clip_te):
    assert network_keys([NetworkTarget("lora_te", clip_te, "hf_clip", "text_encoder")]) == golden("sd1_te.txt")


def test_sdxl_text_encoders_golden(clip_te):
    import tiny_models

    te2 = tiny_models.clip_text_model(64)
    targets = [NetworkTarget("lora_te1", clip_te, "hf_clip", "text_encoder"),
               NetworkTarget("lora_te2", te2, "hf_clip", "text_encoder")]
    assert network_keys(targets) == golden("sdxl_te1_te2.txt")


def test_transformers_5_paths_give_the_same_keys(clip_te):
    # transformers 5 drops the `text_model` level: its module names start at `encoder.`.
    v5_like = NetworkTarget("lora_te", clip_te.text_model, "hf_clip", "text_encoder")
    assert network_keys([v5_like]) == golden("sd1_te.txt")


@pytest.mark.parametrize("targets,count", [("attn", 40), ("attn_ff", 48), ("attn_ff_conv", 79)])
def test_ldm_unet_has_the_diffusers_keys(sd1_unet, targets, count):
    import tiny_models

    ldm = tiny_models.ldm_sd1_unet()
    ldm_keys = network_keys([NetworkTarget("lora_unet", ldm, "ldm", "unet")], targets=targets)
    diffusers_keys = network_keys([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")], targets=targets)
    assert ldm_keys == diffusers_keys and len(ldm_keys) == count


def test_ldm_names_round_trip(sd1_unet):
    import tiny_models

    ldm = tiny_models.ldm_sd1_unet()
    ldm_names = [n for n, m in ldm.named_modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d))]
    layout = keys.UNetLayout.from_module_names([n for n, _ in ldm.named_modules()], "ldm")
    diffusers_names = {n for n, _ in sd1_unet.named_modules()}
    for name in ldm_names:
        twin = keys.ldm_to_diffusers_name(name, layout.layers_per_block)
        assert twin in diffusers_names, name
        assert keys.diffusers_to_ldm_name(twin, layout) == name
        key = keys.unet_key(name, "ldm", layout)
        assert keys.file_key_to_module_name(key, "ldm", layout) == name
        assert keys.file_key_to_module_name(key, "diffusers", layout) == twin


def test_sdxl_keys_round_trip_through_module_names(sdxl_unet):
    layout = keys.UNetLayout.from_module_names([n for n, _ in sdxl_unet.named_modules()], "diffusers")
    assert layout.compvis_keys and layout.layers_per_block == 2
    for key in golden("sdxl_unet_locon.txt"):
        name = keys.file_key_to_module_name(key, "diffusers", layout)
        # a LoCon key names one Linear or Conv2d layer (get_submodule raises for a name that is not there)
        assert isinstance(sdxl_unet.get_submodule(name), (torch.nn.Linear, torch.nn.Conv2d)), name
        assert keys.unet_key(name, "diffusers", layout) == key


def webui_diffusers_to_compvis(key: str) -> str:
    """The WebUI v1.10.1 table (webui-api.md 2.3), written out independently, for 2 layers per block."""
    resnet = {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
              "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}

    def suffix(kind: str, rest: str) -> str:
        return resnet.get(rest, rest) if kind == "resnets" else rest
    if m := re.match(r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"diffusion_model_input_blocks_{1 + 3 * i + j}_{1 if kind == 'attentions' else 0}_{suffix(kind, rest)}"
    if m := re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key):
        kind, j, rest = m[1], int(m[2]), m[3]
        return f"diffusion_model_middle_block_{1 if kind == 'attentions' else 2 * j}_{suffix(kind, rest)}"
    if m := re.match(r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key):
        i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
        return f"diffusion_model_output_blocks_{3 * i + j}_{1 if kind == 'attentions' else 0}_{suffix(kind, rest)}"
    if m := re.match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", key):
        return f"diffusion_model_input_blocks_{3 + 3 * int(m[1])}_0_op"
    if m := re.match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", key):
        i = int(m[1])
        return f"diffusion_model_output_blocks_{2 + 3 * i}_{2 if i > 0 else 1}_conv"
    raise AssertionError(key)


def test_full_size_sd1_keys_follow_the_webui_table():
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(cross_attention_dim=768)  # SD1.x layout: 4 levels x 2 layers
    names = [n for n, _ in unet.named_modules()]
    layout = keys.UNetLayout.from_module_names(names, "diffusers")
    found = network_keys([NetworkTarget("lora_unet", unet, "diffusers", "unet")], algo="locon")
    assert len(found) > 250
    for key in found:
        ldm = keys.file_key_to_module_name(key, "ldm", layout)
        assert webui_diffusers_to_compvis(key) == "diffusion_model_" + ldm.replace(".", "_")


@pytest.mark.parametrize("param,family,expected", [
    ("model.diffusion_model.input_blocks.1.1.proj_in.weight", "sd1", "lora_unet_down_blocks_0_attentions_0_proj_in"),
    ("model.diffusion_model.output_blocks.11.1.transformer_blocks.0.ff.net.2.bias", "sd1",
     "lora_unet_up_blocks_3_attentions_2_transformer_blocks_0_ff_net_2"),
    ("model.diffusion_model.middle_block.2.out_layers.3.weight", "sd2", "lora_unet_mid_block_resnets_1_conv2"),
    ("model.diffusion_model.output_blocks.2.1.conv.weight", "sd1", "lora_unet_up_blocks_0_upsamplers_0_conv"),
    ("model.diffusion_model.input_blocks.1.1.norm.weight", "sd1", None),
    ("model.diffusion_model.time_embed.0.weight", "sd1", None),
    ("cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight", "sd1",
     "lora_te_text_model_encoder_layers_0_self_attn_q_proj"),
    ("cond_stage_model.transformer.text_model.encoder.layers.0.layer_norm1.weight", "sd1", None),
    ("cond_stage_model.model.transformer.resblocks.5.mlp.c_proj.weight", "sd2",
     "lora_te_text_model_encoder_layers_5_mlp_fc2"),
    ("cond_stage_model.model.transformer.resblocks.5.attn.in_proj_weight", "sd2", None),
    ("model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight", "sdxl",
     "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"),
    ("model.diffusion_model.output_blocks.2.2.conv.weight", "sdxl", "lora_unet_output_blocks_2_2_conv"),
    ("conditioner.embedders.0.transformer.text_model.encoder.layers.3.mlp.fc1.weight", "sdxl",
     "lora_te1_text_model_encoder_layers_3_mlp_fc1"),
    ("conditioner.embedders.1.model.transformer.resblocks.0.attn.out_proj.weight", "sdxl",
     "lora_te2_text_model_encoder_layers_0_self_attn_out_proj"),
])
def test_checkpoint_param_to_lora_key(param, family, expected):
    assert keys.checkpoint_param_to_lora_key(param, family) == expected


def test_checkpoint_in_proj_keys():
    got = keys.checkpoint_in_proj_keys("conditioner.embedders.1.model.transformer.resblocks.2.attn.in_proj_weight",
                                       "sdxl")
    assert got == [f"lora_te2_text_model_encoder_layers_2_self_attn_{p}_proj" for p in "qkv"]
