"""Stand-in of modules/sd_hijack.py: text-encoder wrapping and the cross-attention optimization switch.

apply_optimizations() replaces ldm's CrossAttention.forward class-wide, as the real one does
(with sdp, xformers, ...); undo_optimizations() puts the stock forward back."""
from __future__ import annotations

from modules import sd_hijack_clip, sd_hijack_open_clip

current_optimizer = None
_stock_forward = None


def _optimized_forward(self, x, context=None, mask=None):
    """Same math as ldm's CrossAttention.forward via torch's fused attention (like 'sdp')."""
    import torch.nn.functional as F
    from einops import rearrange
    h = self.heads
    q = self.to_q(x)
    context = x if context is None else context
    k, v = self.to_k(context), self.to_v(context)
    q, k, v = (rearrange(t, 'b n (h d) -> b h n d', h=h) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v)
    return self.to_out(rearrange(out, 'b h n d -> b n (h d)'))


def apply_optimizations(option=None):
    global current_optimizer, _stock_forward
    from ldm.modules.attention import CrossAttention
    if _stock_forward is None:
        _stock_forward = CrossAttention.forward
    CrossAttention.forward = _optimized_forward
    current_optimizer = "sdp"
    return current_optimizer


def undo_optimizations():
    global current_optimizer
    from ldm.modules.attention import CrossAttention
    if _stock_forward is not None:
        CrossAttention.forward = _stock_forward
    current_optimizer = None


class StableDiffusionModelHijack:
    def __init__(self):
        self.embedding_db = None
        self.clip = None
        self.layers = None
        self.optimization_method = None
        self.extra_generation_params = {}
        self.comments = []

    def hijack(self, m):
        if getattr(m, "conditioner", None) is not None:
            embedders = m.conditioner.embedders
            embedders[0] = sd_hijack_clip.FrozenCLIPEmbedderForSDXLWithCustomWords(embedders[0], self)
            embedders[1] = sd_hijack_open_clip.FrozenOpenCLIPEmbedder2WithCustomWords(embedders[1], self)
            m.cond_stage_model = m.conditioner
        elif hasattr(m.cond_stage_model, "encode_with_transformer"):
            m.cond_stage_model = sd_hijack_open_clip.FrozenOpenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        else:
            m.cond_stage_model = sd_hijack_clip.FrozenCLIPEmbedderWithCustomWords(m.cond_stage_model, self)
        self.clip = m.cond_stage_model
        self.optimization_method = apply_optimizations()

    def undo_hijack(self, m):
        undo_optimizations()

    def clear_comments(self):
        self.comments = []
        self.extra_generation_params = {}


model_hijack = StableDiffusionModelHijack()
