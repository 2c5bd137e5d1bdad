"""Tiny checkpoints and LoRAs with real SD names, built in code (seeded), for the ops tests."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from safetensors.torch import save_file

from lib_lora.networks.keys import checkpoint_param_to_lora_key
from lib_lora.ops.sd15_layout import sd1_shapes

UNET = "model.diffusion_model."
ATTN_Q = UNET + "input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight"          # IN01, 8x8
ATTN_K2 = UNET + "output_blocks.3.1.transformer_blocks.0.attn2.to_k.weight"        # OUT03, 32x12
PROJ_IN = UNET + "middle_block.1.proj_in.weight"                                   # MID, 32x32x1x1
CONV3 = UNET + "input_blocks.4.0.in_layers.2.weight"                               # IN04, 16x8x3x3
TE_Q = "cond_stage_model.transformer.text_model.encoder.layers.0.self_attn.q_proj.weight"


def tiny_sd1(seed: int = 0) -> dict[str, torch.Tensor]:
    """An SD1-named checkpoint with 8/16/32 channels, a 12-wide context, one text layer, EMA and int keys."""
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for name, shape in sd1_shapes(base=8, context=12, te_layers=1, vocab=16).items():
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
        sd[name] = torch.randn(shape, generator=g) / math.sqrt(fan_in)
    sd["cond_stage_model.transformer.text_model.embeddings.position_ids"] = torch.arange(77).unsqueeze(0)
    sd["model_ema.decay"] = torch.tensor(0.9999)
    sd["model_ema.diffusion_modelinput_blocks11transformer_blocks0attn1to_qweight"] = sd[ATTN_Q].clone()
    return sd


def low_rank(shape: tuple[int, ...], rank: int, seed: int, size: float = 0.05) -> torch.Tensor:
    """A random change of rank `rank` (over the flattened (out, in*kh*kw) matrix) and norm `size`."""
    g = torch.Generator().manual_seed(1000 + seed)
    cols = math.prod(shape[1:])
    delta = torch.randn(shape[0], rank, generator=g) @ torch.randn(rank, cols, generator=g)
    return (delta * (size / float(delta.norm()))).reshape(shape)


def save(path: Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata=metadata)
    return path


def make_lora(params: list[str], rank: int, alpha: float, seed: int = 0, family: str = "sd1",
              shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, torch.Tensor]:
    """A plain LoRA (lora_up/lora_down/alpha) on the layers owning `params`, random nonzero factors."""
    g = torch.Generator().manual_seed(seed)
    shapes = shapes or {k: tuple(v.shape) for k, v in tiny_sd1().items()}
    out = {}
    for name in params:
        shape = shapes[name]
        key = checkpoint_param_to_lora_key(name, family)
        down = torch.randn(rank, *shape[1:], generator=g) * 0.1
        up = torch.randn(shape[0], rank, *([1, 1] if len(shape) == 4 else []), generator=g) * 0.1
        out.update({f"{key}.lora_down.weight": down, f"{key}.lora_up.weight": up,
                    f"{key}.alpha": torch.tensor(float(alpha))})
    return out


def lora_product(tensors: dict[str, torch.Tensor], key: str) -> torch.Tensor:
    """scale * up @ down of one module, flattened to 2-D, fp32 (the WebUI's scale alpha / dim)."""
    up = tensors[f"{key}.lora_up.weight"].float()
    down = tensors[f"{key}.lora_down.weight"].float()
    scale = float(tensors[f"{key}.alpha"]) / down.shape[0]
    return up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1) * scale


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm())
