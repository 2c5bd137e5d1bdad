"""The state dict of a random-weight SDXL-base checkpoint (ldm/sgm layout, fp16), for a genuine WebUI.

The UNet and VAE are the WebUI's own sgm classes built from generative-models'
configs/inference/sd_xl_base.yaml, CLIP-L is transformers' CLIPTextModel and bigG is
open_clip's ViT-bigG-14 text tower, exactly the modules sgm's conditioner wraps. All of
them are built on the meta device (an fp32 SDXL would need 14 GiB just to exist) and each
tensor is then drawn in fp16 one at a time, so the peak is about one fp16 copy (~7 GB).

Initialisation follows PyTorch's defaults per layer type (uniform +-1/sqrt(fan_in) for
Linear/Conv weights and biases, norms at 1/0, embeddings N(0, 0.02)), never ldm's
zero_module: an all-zero output layer would make the UNet predict zero and no LoRA could
change an image.
"""
from __future__ import annotations

import math
import sys
from pathlib import Path

import torch
from torch import nn

UNET, VAE = "model.diffusion_model.", "first_stage_model."
CLIP_L, CLIP_G = "conditioner.embedders.0.transformer.", "conditioner.embedders.1.model."


def _meta_modules(webui: Path) -> dict[str, nn.Module]:
    import open_clip
    from omegaconf import OmegaConf
    from transformers import CLIPTextConfig, CLIPTextModel

    sys.path.insert(0, str(webui / "repositories" / "generative-models"))
    from sgm.util import instantiate_from_config

    config = webui / "repositories" / "generative-models" / "configs" / "inference" / "sd_xl_base.yaml"
    params = OmegaConf.load(config).model.params
    with torch.device("meta"):
        big_g = open_clip.create_model("ViT-bigG-14", pretrained=None, device="meta")
        del big_g.visual   # sgm's FrozenOpenCLIPEmbedder2 keeps the text tower only
        return {UNET: instantiate_from_config(params.network_config),
                VAE: instantiate_from_config(params.first_stage_config),
                CLIP_L: CLIPTextModel(CLIPTextConfig(
                    hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                    max_position_embeddings=77, projection_dim=768, hidden_act="quick_gelu", vocab_size=49408)),
                CLIP_G: big_g}


def _draw(module: nn.Module, name: str, shape: torch.Size, gen: torch.Generator) -> torch.Tensor:
    """One fp32 tensor initialised the way PyTorch initialises `module`'s parameter `name`."""
    if isinstance(module, (nn.GroupNorm, nn.LayerNorm)) or "norm" in type(module).__name__.lower():
        return torch.ones(shape) if name == "weight" else torch.zeros(shape)
    if isinstance(module, nn.Embedding) or name in ("positional_embedding", "token_embedding"):
        return torch.randn(shape, generator=gen) * 0.02
    if name == "logit_scale":
        return torch.full(shape, math.log(1 / 0.07))
    if isinstance(module, nn.Linear | nn.Conv2d | nn.Conv1d | nn.MultiheadAttention) and len(shape) >= 1:
        if name.endswith("weight") and len(shape) >= 2:
            fan_in = math.prod(shape[1:])
        else:   # a bias: PyTorch bounds it by the weight's fan-in
            weight = getattr(module, "weight", None)
            if weight is None:
                weight = getattr(module, "in_proj_weight")
            fan_in = math.prod(weight.shape[1:])
        bound = 1 / math.sqrt(max(fan_in, 1))
        return (torch.rand(shape, generator=gen) * 2 - 1) * bound
    # free parameters (text_projection and the like): scaled like a projection of their input width
    return torch.randn(shape, generator=gen) * (shape[0] ** -0.5 if len(shape) else 1.0)


def build_sdxl_state_dict(webui: Path, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    for prefix, root in _meta_modules(webui).items():
        for module_name, module in root.named_modules():
            for name, tensor in list(module._parameters.items()) + list(module._buffers.items()):
                if tensor is None or (name in module._buffers and name in module._non_persistent_buffers_set):
                    continue
                key = prefix + (f"{module_name}.{name}" if module_name else name)
                if not tensor.is_floating_point():   # e.g. CLIP's position_ids: real values, not random
                    state[key] = torch.arange(tensor.shape[-1]).expand(tensor.shape).to(tensor.dtype).contiguous()
                    continue
                state[key] = _draw(module, name, tensor.shape, gen).to(torch.float16)
    return state
