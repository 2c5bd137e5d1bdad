"""The stand-in's functions that Train LoRA or its tests call have WebUI v1.10.1's signatures and rules
(read from the v1.10.1 sources: modules/lowvram.py, modules/errors.py, extensions-builtin/Lora/networks.py)."""
from __future__ import annotations

import inspect

import pytest

from tests.webui.conftest import load_family


def _parameters(function) -> list[str]:
    return list(inspect.signature(function).parameters)


def test_signatures_are_those_of_v1_10_1(webui):
    from modules import lowvram
    assert _parameters(lowvram.is_needed) == ["sd_model"]
    assert _parameters(webui.networks.convert_diffusers_name_to_compvis) == ["key", "is_sd2"]
    assert _parameters(webui.networks.load_network) == ["name", "network_on_disk"]
    assert _parameters(webui.networks.NetworkOnDisk) == ["name", "filename"]
    assert _parameters(webui.errors.report) == ["message", "exc_info"]


@pytest.mark.parametrize("flag, family, needed", [
    ("lowvram", "sd1", True), ("medvram", "sd1", True), ("medvram", "sdxl", True),
    ("medvram_sdxl", "sd1", False), ("medvram_sdxl", "sdxl", True), (None, "sdxl", False)])
def test_lowvram_is_needed_reads_the_command_line(webui, flag, family, needed):
    """--medvram-sdxl applies to SDXL models only (those with a conditioner)."""
    from modules import lowvram
    model = load_family(webui, family)
    if flag:
        setattr(webui.shared.cmd_opts, flag, True)
    try:
        assert bool(lowvram.is_needed(model)) is needed
    finally:
        if flag:
            setattr(webui.shared.cmd_opts, flag, False)


# Hand-made from the WebUI's SD1.5 layout (two ResBlocks and a down/upsampler per UNet level)
SD15_KEYS = {
    "lora_unet_down_blocks_0_attentions_1_proj_in": "diffusion_model_input_blocks_2_1_proj_in",
    "lora_unet_down_blocks_1_resnets_0_conv1": "diffusion_model_input_blocks_4_0_in_layers_2",
    "lora_unet_down_blocks_2_downsamplers_0_conv": "diffusion_model_input_blocks_9_0_op",
    "lora_unet_mid_block_resnets_1_time_emb_proj": "diffusion_model_middle_block_2_emb_layers_1",
    "lora_unet_mid_block_attentions_0_proj_out": "diffusion_model_middle_block_1_proj_out",
    "lora_unet_up_blocks_1_attentions_2_transformer_blocks_0_attn2_to_k":
        "diffusion_model_output_blocks_5_1_transformer_blocks_0_attn2_to_k",
    "lora_unet_up_blocks_0_upsamplers_0_conv": "diffusion_model_output_blocks_2_1_conv",
    "lora_unet_up_blocks_2_upsamplers_0_conv": "diffusion_model_output_blocks_8_2_conv",
    "lora_unet_conv_in": "diffusion_model_input_blocks_0_0",
    "lora_unet_time_embedding_linear_2": "diffusion_model_time_embed_2",
    "lora_te_text_model_encoder_layers_3_mlp_fc1": "transformer_text_model_encoder_layers_3_mlp_fc1",
    "lora_unet_unknown_layer": "lora_unet_unknown_layer",
}


def test_convert_diffusers_name_to_compvis_on_the_sd15_layout(webui):
    networks = webui.networks
    assert networks.blocks_per_level == 3                      # no tiny model loaded a network yet
    for key, name in SD15_KEYS.items():
        assert networks.convert_diffusers_name_to_compvis(key, False) == name, key
    assert (networks.convert_diffusers_name_to_compvis("lora_te_text_model_encoder_layers_3_mlp_fc2", True)
            == "model_transformer_resblocks_3_mlp_c_proj")
    assert (networks.convert_diffusers_name_to_compvis("lora_te2_text_model_encoder_layers_0_self_attn_q_proj",
                                                       False) == "1_model_transformer_resblocks_0_attn_q_proj")


def test_a_raising_callback_is_recorded_and_swallowed_as_in_the_webui(webui):
    """What tests/webui/conftest.py relies on; a test expecting a record reads it and clears the list."""
    def broken():
        raise RuntimeError(f"broken callback {len(calls)}")
    calls: list = []
    category = webui.script_callbacks.callback_map["callbacks_before_ui"]
    webui.script_callbacks.on_before_ui(broken)
    try:
        for _ in range(7):
            webui.script_callbacks.before_ui_callback()       # does not raise
            calls.append(1)
    finally:
        category[:] = [c for c in category if c.callback is not broken]
    records = webui.errors.exception_records
    assert [r["exception"] for r in records] == [f"broken callback {n}" for n in range(2, 7)]   # the last five
    assert records[-1]["traceback"][-1][0].endswith(", broken")
    records.clear()
