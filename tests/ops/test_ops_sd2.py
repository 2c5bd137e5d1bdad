"""OpenCLIP's fused q/k/v weight (SD2, SDXL's second encoder): extraction splits it, merging refills it."""
from __future__ import annotations

import torch

from lib_lora.ops.config import ExtractConfig, MergeConfig
from lib_lora.ops.extract import extract_lora
from lib_lora.ops.lora_inputs import load_lora_inputs
from lib_lora.ops.merge_checkpoint import merge_into_checkpoint
from ops_fixtures import low_rank, rel

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
    tensors, report, family = extract_lora(base, tuned, ExtractConfig(rank=2, precision="fp32"))
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
