"""One family list and one family rule per kind of input.

- a checkpoint's state-dict keys: checkpoint_io.detect_family, used by extract/merge, single-file
  loading and `inspect --base` alike (inspect had its own prefix rule that took any file for SD1);
- a LoRA file's metadata and keys: networks/metadata.family_of_lora, the inverse of what
  base_model_version writes.

Oracles: ldm/sgm tensor names and sd-scripts' LoRA key names and ss_base_model_version values,
written out by hand as they appear in real files.
"""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lib_lora.checkpoint_io import FAMILIES, detect_family
from lib_lora.errors import ModelError
from lib_lora.networks.inspect import base_keys_from_checkpoint
from lib_lora.networks.metadata import ARCHITECTURES, NATIVE_RESOLUTION, family_of_lora

SD1_TE = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
SD2_TE = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
SDXL_TE1 = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
SDXL_TE2 = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
LDM_ATTN = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"
SGM_ATTN = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"


def test_every_family_has_its_metadata():
    assert FAMILIES == ("sd1", "sd2", "sdxl")
    assert set(NATIVE_RESOLUTION) == set(FAMILIES)
    assert {(f, p) for f in FAMILIES for p in ("eps", "v")} == set(ARCHITECTURES)


@pytest.mark.parametrize("names, family", [
    ([SD1_TE, LDM_ATTN], "sd1"),
    ([SD2_TE, LDM_ATTN], "sd2"),
    ([SDXL_TE1, SDXL_TE2, SGM_ATTN], "sdxl"),
    ([SDXL_TE2, SGM_ATTN], "sdxl"),            # a refiner-like file: bigG only
])
def test_state_dict_keys_name_the_family(names, family):
    assert detect_family(names) == family


def _checkpoint(tmp_path, names):
    path = tmp_path / "base.safetensors"
    save_file({name: torch.zeros(1) for name in names}, str(path))
    return path


def test_inspect_base_reads_the_family_by_the_same_rule(tmp_path):
    sdxl = base_keys_from_checkpoint(_checkpoint(tmp_path, [SDXL_TE1, SDXL_TE2, SGM_ATTN]))
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in sdxl
    assert "lora_te2_text_model_encoder_layers_0_self_attn_q_proj" in sdxl
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in sdxl
    sd2 = base_keys_from_checkpoint(_checkpoint(tmp_path, [SD2_TE, LDM_ATTN]))
    assert "lora_te_text_model_encoder_layers_0_self_attn_q_proj" in sd2
    assert "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q" in sd2


def test_inspect_base_refuses_a_file_of_no_known_family_as_extract_does(tmp_path):
    path = _checkpoint(tmp_path, [LDM_ATTN])       # a UNet alone: SD1, SD2? it cannot tell
    with pytest.raises(ModelError, match="no known text-encoder keys"):
        base_keys_from_checkpoint(path)
    with pytest.raises(ModelError, match="no known text-encoder keys"):
        detect_family([LDM_ATTN], str(path))


@pytest.mark.parametrize("metadata, keys, family", [
    ({"ss_base_model_version": "sdxl_base_v1-0"}, [], "sdxl"),
    ({"ss_base_model_version": "sd_v2_v"}, [], "sd2"),
    ({"ss_v2": "True"}, [], "sd2"),
    ({"ss_base_model_version": "sd_v1"}, ["lora_unet_down_blocks_0_attentions_0_proj_in"], "sd1"),
    ({}, ["lora_te1_text_model_encoder_layers_0_mlp_fc1"], "sdxl"),       # two text encoders
    ({}, ["lora_unet_input_blocks_4_1_proj_in"], "sdxl"),                  # sgm-style UNet names
    ({}, ["lora_te_text_model_encoder_layers_0_mlp_fc1"], "sd1"),
])
def test_a_lora_file_names_the_family_it_was_made_for(metadata, keys, family):
    assert family_of_lora(metadata, keys) == family
