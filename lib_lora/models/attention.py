"""The UNet attention processor for diffusers models: SDPA, or the compiled CPU kernel.

`SmallHeadAttnProcessor` does what diffusers' AttnProcessor2_0 does for the
attention layers of SD/SDXL UNets (projections, heads, softmax attention, output
projection, residual and rescale), but hands the softmax attention to
kernels/cpu_attention.py when it can run there (CPU, fp32, head size 4 or 8,
no mask) and to scaled_dot_product_attention otherwise. Layers with features it
does not cover (spatial/group norms, q/k norms, masks) go to AttnProcessor2_0 as
a whole. The LoRA-wrapped projections are called as modules, so the network's
instance forwards apply as with any other processor.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


class SmallHeadAttnProcessor:
    def __init__(self):
        from diffusers.models.attention_processor import AttnProcessor2_0

        self.fallback = AttnProcessor2_0()

    @staticmethod
    def covers(attn) -> bool:
        extras = ("spatial_norm", "group_norm", "norm_q", "norm_k")
        return not any(getattr(attn, name, None) is not None for name in extras)

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args, **kwargs) -> torch.Tensor:
        if attention_mask is not None or not self.covers(attn):
            return self.fallback(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)
        residual = hidden_states
        spatial = hidden_states.shape if hidden_states.ndim == 4 else None
        if spatial is not None:  # (B, C, H, W) -> (B, H*W, C)
            hidden_states = hidden_states.flatten(2).transpose(1, 2)
        context = hidden_states
        if encoder_hidden_states is not None:
            context = attn.norm_encoder_hidden_states(encoder_hidden_states) if attn.norm_cross \
                else encoder_hidden_states
        out = self.attend(attn.to_q(hidden_states), attn.to_k(context), attn.to_v(context), attn.heads)
        out = attn.to_out[1](attn.to_out[0](out))
        if spatial is not None:
            out = out.transpose(-1, -2).reshape(spatial)
        if attn.residual_connection:
            out = out + residual
        return out / attn.rescale_output_factor

    @staticmethod
    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
        """softmax(q k^T / sqrt(head size)) v on (batch, tokens, heads * head size) tensors."""
        from ..kernels import cpu_attention

        head_size = q.shape[-1] // heads
        if cpu_attention.runs_on(q, k, v, heads):
            return cpu_attention.attention(q, k, v, heads, head_size ** -0.5)
        batch = q.shape[0]
        split = [t.view(batch, -1, heads, head_size).transpose(1, 2) for t in (q, k, v)]
        out = F.scaled_dot_product_attention(*split)
        return out.transpose(1, 2).reshape(batch, -1, heads * head_size)
