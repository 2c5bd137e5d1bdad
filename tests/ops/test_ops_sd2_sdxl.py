"""SD2 and SDXL: OpenCLIP's fused q/k/v weight is split on extraction and refilled on merge; SDXL keys."""
from __future__ import annotations

import torch

from lib_lora.ops.config import ExtractConfig, MergeConfig
from lib_lora.ops.extract import extract_lora
from lib_lora.ops.lora_inputs import load_lora_inputs
from lib_lora.ops.merge_checkpoint import merge_into_checkpoint
from ops_fixtures import low_rank, lora_product, rel

RES = "cond_stage_model.model.transformer.resblocks.0."
IN_PROJ = RES + "attn.in_proj_weight"
UNET_Q = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"


def _tiny_sd2() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {IN_PROJ: torch.randn(24, 8, generator=g), RES + "attn.in_proj_bias": torch.zeros(24),
            RES + "attn.out_proj.weight": torch.randn(8, 8, generator=g),
            RES + "mlp.c_fc.weight": torch.randn(32, 8, generator=g),
            RES + "mlp.c_proj.weight": torch.randn(8, 32, generator=g),
            UNET_Q: torch.randn(8, 8, generator=g)}


def test_fused_qkv_round_trip(tmp_path):
    base = _tiny_sd2()
    tuned = {k: v.clone() for k, v in base.items()}
    q_change, v_change = low_rank((8, 8), 2, seed=1, size=0.5), low_rank((8, 8), 2, seed=2, size=0.5)
    tuned[IN_PROJ][:8] += q_change
    tuned[IN_PROJ][16:] += v_change
    tensors, report, family = extract_lora(base, tuned, ExtractConfig(dim=2, precision="fp32"))
    assert family == "sd2"
    te_keys = {k.split(".")[0] for k in tensors}
    assert te_keys == {"lora_te_text_model_encoder_layers_0_self_attn_q_proj",
                       "lora_te_text_model_encoder_layers_0_self_attn_v_proj"}   # k did not change
    out = tmp_path / "merged.safetensors"
    merge_into_checkpoint(base, load_lora_inputs([tensors], [], []), out, MergeConfig(precision="fp32"))
    from safetensors import safe_open
    with safe_open(str(out), "pt") as f:
        merged = f.get_tensor(IN_PROJ)
    assert rel(merged - base[IN_PROJ], tuned[IN_PROJ] - base[IN_PROJ]) < 1e-4
    assert torch.equal(merged[8:16], base[IN_PROJ][8:16])


def test_sdxl_keys_blocks_and_both_text_encoders():
    from lib_lora.ops.blocks import block_of
    g = torch.Generator().manual_seed(3)
    te1 = "conditioner.embedders.0.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"
    te2 = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight"
    unet = "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn1.to_q.weight"
    base = {te1: torch.randn(8, 8, generator=g), te2: torch.randn(24, 8, generator=g),
            unet: torch.randn(8, 8, generator=g)}
    tuned = {k: v + low_rank(tuple(v.shape), 2, seed=i, size=0.5) for i, (k, v) in enumerate(base.items())}
    tensors, report, family = extract_lora(base, tuned, ExtractConfig(dim=2, precision="fp32"))
    keys = {k.split(".")[0] for k in tensors}
    assert family == "sdxl"
    assert "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q" in keys
    assert "lora_te1_text_model_encoder_layers_0_self_attn_q_proj" in keys
    assert {f"lora_te2_text_model_encoder_layers_0_self_attn_{p}_proj" for p in "qkv"} <= keys
    assert block_of("lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q") == "IN04"
    assert rel(lora_product(tensors, "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q"),
               tuned[unet] - base[unet]) < 1e-4

