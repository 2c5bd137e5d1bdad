"""Which config a single-file checkpoint gets, from real key names and shapes (meta tensors: no memory)."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from lib_lora.errors import ModelError
from lib_lora.models.checkpoint_layout import detect_layout
from lib_lora.models.diffusers_adapter import load_diffusers_model
from lib_lora.ops.sd15_layout import sd1_shapes

U = "model.diffusion_model."
OPENCLIP_SD2 = "cond_stage_model.model.transformer.resblocks.0.attn.in_proj_weight"
CLIP_L_SDXL = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
BIGG_SDXL = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
BIGG_REFINER = "conditioner.embedders.0.model.transformer.resblocks.0.attn.in_proj_weight"


def _meta(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {name: torch.empty(shape, device="meta") for name, shape in shapes.items()}


def sd1() -> dict[str, torch.Tensor]:
    return _meta(sd1_shapes())            # every UNet and text-encoder tensor of SD1.5, shapes only


def sd2(in_channels: int = 4) -> dict[str, torch.Tensor]:
    return _meta({OPENCLIP_SD2: (3072, 1024), U + "input_blocks.0.0.weight": (320, in_channels, 3, 3),
                  U + "input_blocks.1.1.proj_in.weight": (320, 320),
                  U + "input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 1024)})


def sdxl(base: int = 320, context: int = 2048, refiner: bool = False) -> dict[str, torch.Tensor]:
    encoders = {BIGG_REFINER: (3 * 1280, 1280)} if refiner else {CLIP_L_SDXL: (768, 768), BIGG_SDXL: (3 * 1280, 1280)}
    return _meta({**encoders, U + "label_emb.0.0.weight": (4 * base, 2816 if not refiner else 2560),
                  U + "input_blocks.0.0.weight": (base, 4, 3, 3),
                  U + "input_blocks.4.1.proj_in.weight": (2 * base, 2 * base),
                  U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (2 * base, context)})


@pytest.mark.parametrize("state, v, family, config", [
    (sd1, False, "sd1", "sd15"),
    (sd2, False, "sd2", "sd21_base"),
    (sd2, True, "sd2", "sd21_v"),       # v leaves no trace in the weights: the option decides
    (sdxl, False, "sdxl", "sdxl_base"),
])
def test_stock_checkpoints_get_their_family_config(state, v, family, config):
    layout = detect_layout(state(), v_parameterization=v)
    assert (layout.family, layout.config_name) == (family, config)


def test_sdxl_refiner_is_refused_and_named():
    with pytest.raises(ModelError, match="SDXL refiner") as err:
        detect_layout(sdxl(base=384, context=1280, refiner=True))
    assert "384 base channels" in str(err.value) and "model.config_dir" in err.value.fix


def test_inpainting_unet_is_refused_and_named():
    with pytest.raises(ModelError, match="inpainting model") as err:
        detect_layout(sd2(in_channels=9))
    assert "9 input channels" in str(err.value)


def test_a_file_that_is_no_sd_checkpoint_says_what_it_is_not(tmp_path):
    lora = tmp_path / "some_lora.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": torch.zeros(4, 32)}, str(lora))
    with pytest.raises(ModelError, match="Not a Stable Diffusion 1.x, 2.x or XL checkpoint") as err:
        load_diffusers_model(lora)
    assert err.value.where == str(lora) and "not a diffusers folder, a VAE or a LoRA" in err.value.fix


def test_text_encoder_without_unet_is_refused():
    te_only = {k: v for k, v in sd1().items() if not k.startswith(U)}
    with pytest.raises(ModelError, match="no UNet"):
        detect_layout(te_only)


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_a_corrupt_file_says_it_is_damaged(tmp_path, suffix):
    broken = tmp_path / f"model{suffix}"
    broken.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json" + bytes(200))
    with pytest.raises(ModelError) as err:
        load_diffusers_model(broken)
    assert err.value.where == str(broken)
    assert "damaged" in err.value.fix


def test_a_truncated_safetensors_is_damaged_not_a_crash(tiny_single_file, tmp_path):
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(tiny_single_file.safetensors.read_bytes()[:4096])   # a download that stopped early
    with pytest.raises(ModelError, match="cannot be read"):
        load_diffusers_model(cut, config_dir=tiny_single_file.config_dir)



def test_a_ckpt_carrying_python_objects_is_refused_as_unsafe_not_as_damaged(tmp_path):
    import argparse

    ckpt = tmp_path / "old_trainer.ckpt"    # old trainers pickled their arguments beside the weights
    weights = {"cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight": torch.zeros(2, 2)}
    torch.save({"state_dict": weights, "hyper_parameters": argparse.Namespace(lr=1e-4)}, str(ckpt))
    with pytest.raises(ModelError, match="holds Python objects besides tensors") as err:
        load_diffusers_model(ckpt)
    assert ".safetensors" in err.value.fix
