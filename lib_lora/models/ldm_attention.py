"""Attention of the ldm/sgm model the WebUI holds, run through torch's scaled_dot_product_attention.

ldm's stock CrossAttention computes softmax(q k^T) v with the whole tokens x tokens map per
head, and keeps it for backward: at 512 px SD1.5's first level has 4096 tokens, so 64 MiB per
head and layer in fp32. The WebUI swaps the class's forward for its chosen optimization while
generating, but undoes that for training (some of them are not differentiable), which leaves
the stock math. `sdpa_forwards` instead gives each attention module of a model an instance
`forward` with the same projections (called as modules, so LoRA instance forwards on to_q/k/v/out
apply) and `F.scaled_dot_product_attention` in the middle (flash or memory-efficient kernels:
no map kept). Instance forwards sit in front of any class-wide patch and are removed by
deleting the attribute, which the WebUI bridge's snapshot does on every way out.

The module shapes read here (ldm.modules.attention, sgm.modules.attention,
ldm.modules.diffusionmodules.model):
- CrossAttention / MemoryEfficientCrossAttention: to_q, to_k, to_v (Linear, no bias), to_out
  (Linear + Dropout), `heads`; forward(x, context=None, mask=None); sgm adds
  additional_tokens and n_times_crossframe_attn_in_self (video models; never set by SD/SDXL).
- AttnBlock / MemoryEfficientAttnBlock (VAE): norm, q, k, v, proj_out (1x1 Conv2d), one head
  of in_channels; forward(x) (sgm: forward(x, **kwargs)) = x + proj_out(attention(norm(x))).
"""
from __future__ import annotations

from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

CROSS_ATTENTION_CLASSES = ("CrossAttention", "MemoryEfficientCrossAttention")
VAE_ATTENTION_CLASSES = ("AttnBlock", "MemoryEfficientAttnBlock")
SDPA_MARK = "_lib_lora_sdpa"


def is_cross_attention(module: nn.Module) -> bool:
    return type(module).__name__ in CROSS_ATTENTION_CLASSES and all(
        hasattr(module, name) for name in ("to_q", "to_k", "to_v", "to_out", "heads"))


def is_vae_attention(module: nn.Module) -> bool:
    return type(module).__name__ in VAE_ATTENTION_CLASSES and all(
        hasattr(module, name) for name in ("norm", "q", "k", "v", "proj_out"))


def _heads_first(t: torch.Tensor, heads: int) -> torch.Tensor:
    """(b, n, heads * d) -> (b, heads, n, d)"""
    b, n, inner = t.shape
    return t.view(b, n, heads, inner // heads).transpose(1, 2)


def _key_mask(module: nn.Module, mask: torch.Tensor, batch: int) -> torch.Tensor:
    """ldm's mask is a bool per key, True = attend (it fills the others with -max); sgm passes its
    mask to SDPA as given."""
    if type(module).__module__.startswith("sgm"):
        return mask
    return mask.reshape(batch, -1).bool()[:, None, None, :]


def cross_attention_forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    def forward(x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None,
                additional_tokens: Any = None, n_times_crossframe_attn_in_self: int = 0, **kwargs: Any):
        if additional_tokens is not None or n_times_crossframe_attn_in_self or kwargs:
            return type(module).forward(module, x, context, mask, additional_tokens=additional_tokens,
                                        n_times_crossframe_attn_in_self=n_times_crossframe_attn_in_self,
                                        **kwargs)
        heads = module.heads
        context = x if context is None else context
        q, k, v = (_heads_first(t, heads) for t in (module.to_q(x), module.to_k(context), module.to_v(context)))
        attn_mask = None if mask is None else _key_mask(module, mask, x.shape[0])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        b, _, n, d = out.shape
        return module.to_out(out.transpose(1, 2).reshape(b, n, heads * d))

    setattr(forward, SDPA_MARK, True)
    return forward


def vae_attention_forward(module: nn.Module) -> Callable[..., torch.Tensor]:
    def forward(x: torch.Tensor, **kwargs: Any) -> torch.Tensor:     # sgm's takes (and ignores) kwargs
        h = module.norm(x)
        b, c, height, width = x.shape
        q, k, v = (t.reshape(b, 1, c, height * width).transpose(2, 3) for t in (module.q(h), module.k(h), module.v(h)))
        out = F.scaled_dot_product_attention(q, k, v)          # one head of c channels, scale c ** -0.5
        out = out.transpose(2, 3).reshape(b, c, height, width)
        return x + module.proj_out(out)

    setattr(forward, SDPA_MARK, True)
    return forward


def install_sdpa_forwards(roots: list[nn.Module], saved: dict[nn.Module, Any]) -> int:
    """Give every attention module under `roots` an SDPA instance forward; `saved` records what
    each had before (None: no instance forward) for `remove_sdpa_forwards`. Returns how many."""
    for root in roots:
        for module in root.modules():
            if module in saved:
                continue
            make = cross_attention_forward if is_cross_attention(module) else \
                vae_attention_forward if is_vae_attention(module) else None
            if make is not None:
                saved[module] = module.__dict__.get("forward")
                module.forward = make(module)
    return len(saved)


def remove_sdpa_forwards(saved: dict[nn.Module, Any]) -> None:
    for module, previous in saved.items():
        if previous is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = previous
    saved.clear()
