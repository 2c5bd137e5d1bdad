"""OpenCLIP attention (nn.MultiheadAttention) as four updates: q, k, v and out projections.

SD2's and SDXL's second text encoder use torch's MultiheadAttention with one fused
`in_proj_weight` (3E, E). sd-scripts' files (HF naming) and the WebUI's loader
want separate `..._self_attn_q_proj/k_proj/v_proj/out_proj` keys, and the WebUI
needs all four for an MHA (reference/webui-api.md 2.3). So each row chunk of
`in_proj_weight` gets its own algorithm module over a `ProjectionSlot` (a view,
not a copy), plus one on `out_proj`. MultiheadAttention's forward reads its
weights directly instead of calling `out_proj`, so the adapter replaces the
MHA's instance forward with torch's functional attention on the updated weights.

While the updates train on a frozen base, the four projections instead run through
recompute.py (as LoHa/LoKr/DoRA layers do), which keeps each projection's input and
the small factors for backward, not W + dW: four weight-sized tensors per MHA
otherwise. The attention between the projections then follows
F.multi_head_attention_forward's own steps (`_attention`), for the cases the
OpenCLIP encoders use (batched input, no key padding mask, no bias_k/bias_v or
zero attention); anything else takes the plain path.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import NetworkModule
from .projection_slot import ProjectionSlot
from .recompute import LayerGeometry, run_with_recomputed_weight

PROJECTIONS = ("q", "k", "v")


class MultiheadAttentionAdapter(nn.Module):
    """Holds the q/k/v/out modules of one MultiheadAttention and drives its forward.

    key_stem: e.g. 'lora_te2_text_model_encoder_layers_0_self_attn'."""

    def __init__(self, key_stem: str, mha: nn.MultiheadAttention, module_cls: type[NetworkModule],
                 rank: int, alpha: float, **options: Any):
        super().__init__()
        if not mha._qkv_same_embed_dim:
            raise TypeError(f"{key_stem}: MultiheadAttention with separate q/k/v weights is not supported")
        self._mha = [mha]
        self.key_stem = key_stem
        self.slots = nn.ModuleList(ProjectionSlot(mha, i) for i in range(3))
        leaves = {p: module_cls(f"{key_stem}_{p}_proj", slot, rank, alpha, **options)
                  for p, slot in zip(PROJECTIONS, self.slots)}
        leaves["out"] = module_cls(f"{key_stem}_out_proj", mha.out_proj, rank, alpha, **options)
        self.leaves = nn.ModuleDict(leaves)
        self._had_instance_forward, self._saved_forward, self._attached = False, None, False

    def file_keys(self) -> list[str]:
        return [m.lora_name for m in self.leaves.values()]

    def leaf_modules(self) -> dict[str, NetworkModule]:
        return {m.lora_name: m for m in self.leaves.values()}

    @property
    def multiplier(self) -> float:
        return self.leaves["q"].multiplier

    @multiplier.setter
    def multiplier(self, value: float) -> None:
        for leaf in self.leaves.values():
            leaf.multiplier = value

    def attach(self) -> None:
        if self._attached:
            return
        mha = self._mha[0]
        self._had_instance_forward = "forward" in mha.__dict__
        self._saved_forward = mha.__dict__.get("forward")
        mha.forward = self.forward
        self._attached = True

    def detach(self) -> None:
        if not self._attached:
            return
        mha = self._mha[0]
        if self._had_instance_forward:
            mha.forward = self._saved_forward
        else:
            del mha.__dict__["forward"]
        self._had_instance_forward, self._saved_forward, self._attached = False, None, False

    def merge(self) -> None:
        for leaf in self.leaves.values():
            leaf.merge()

    def unmerge(self) -> None:
        for leaf in self.leaves.values():
            leaf.unmerge()

    def original_forward(self, *args: Any, **kwargs: Any) -> Any:
        mha = self._mha[0]
        if self._had_instance_forward:
            return self._saved_forward(*args, **kwargs)
        return type(mha).forward(mha, *args, **kwargs)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                key_padding_mask: torch.Tensor | None = None, need_weights: bool = True,
                attn_mask: torch.Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        mha = self._mha[0]
        if self.leaves["q"].merged or self.multiplier == 0:
            return self.original_forward(query, key, value, key_padding_mask=key_padding_mask,
                                         need_weights=need_weights, attn_mask=attn_mask,
                                         average_attn_weights=average_attn_weights, is_causal=is_causal)
        if self._can_rebuild_weights(query, key_padding_mask, attn_mask):
            return self._forward_rebuilding_weights(query, key, value, need_weights, attn_mask,
                                                    average_attn_weights, is_causal)
        in_weight = torch.cat([self._updated(self.leaves[p], slot.weight)
                               for p, slot in zip(PROJECTIONS, self.slots)])
        out_weight = self._updated(self.leaves["out"], mha.out_proj.weight)
        if mha.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        out, weights = F.multi_head_attention_forward(
            query, key, value, mha.embed_dim, mha.num_heads, in_weight, mha.in_proj_bias,
            mha.bias_k, mha.bias_v, mha.add_zero_attn, mha.dropout, out_weight, mha.out_proj.bias,
            training=mha.training, key_padding_mask=key_padding_mask, need_weights=need_weights,
            attn_mask=attn_mask, average_attn_weights=average_attn_weights, is_causal=is_causal)
        return (out.transpose(0, 1) if mha.batch_first else out), weights

    @staticmethod
    def _updated(leaf: NetworkModule, weight: torch.Tensor) -> torch.Tensor:
        return weight + leaf.full_delta(weight.float()).to(weight.dtype)

    def _can_rebuild_weights(self, query: torch.Tensor, key_padding_mask: torch.Tensor | None,
                             attn_mask: torch.Tensor | None) -> bool:
        """Whether every projection may rebuild its weight in backward (recompute_plan: a frozen
        base, gradients on, trained factors) and the call is one `_attention` reproduces."""
        mha = self._mha[0]
        if query.dim() != 3 or key_padding_mask is not None or mha.bias_k is not None \
                or mha.bias_v is not None or mha.add_zero_attn:
            return False
        if attn_mask is not None and attn_mask.dim() not in (2, 3):
            return False
        return all(leaf.recompute_plan()[0] is not None for leaf in self.leaves.values())

    def _forward_rebuilding_weights(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                                    need_weights: bool, attn_mask: torch.Tensor | None,
                                    average_attn_weights: bool, is_causal: bool
                                    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mha = self._mha[0]
        if mha.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        q, k, v = (self._project(self.leaves[p], slot, t)
                   for p, slot, t in zip(PROJECTIONS, self.slots, (query, key, value)))
        out, weights = _attention(q, k, v, mha, attn_mask, query.dtype, need_weights,
                                  average_attn_weights, is_causal)
        out = self._project(self.leaves["out"], mha.out_proj, out)
        return (out.transpose(0, 1) if mha.batch_first else out), weights

    @staticmethod
    def _project(leaf: NetworkModule, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """F.linear(x, W + full update, bias), rebuilding W + full update in backward."""
        weight_fn, factors = leaf.updated_weight_fn(layer.weight)
        return run_with_recomputed_weight(x, layer.bias, LayerGeometry(conv=False), weight_fn, factors)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mha: nn.MultiheadAttention,
               attn_mask: torch.Tensor | None, mask_dtype: torch.dtype, need_weights: bool,
               average_attn_weights: bool, is_causal: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """F.multi_head_attention_forward between its in- and out-projection, step for step (torch
    2.x), for projected q (L, N, E), k and v (S, N, E), no key padding mask, bias_k or zero attention."""
    tgt_len, bsz, embed_dim = q.shape
    src_len, heads = k.shape[0], mha.num_heads
    head_dim = embed_dim // heads
    if is_causal and attn_mask is None:
        raise RuntimeError("Need attn_mask if specifying the is_causal hint.")
    if is_causal and not need_weights:
        attn_mask = None        # torch's choice: scaled_dot_product_attention's own causal mask
    elif attn_mask is not None and not torch.is_floating_point(attn_mask):
        attn_mask = torch.zeros_like(attn_mask, dtype=mask_dtype).masked_fill_(attn_mask, float("-inf"))
    if attn_mask is not None and attn_mask.dim() == 2:
        attn_mask = attn_mask.unsqueeze(0)
    q = q.reshape(tgt_len, bsz * heads, head_dim).transpose(0, 1)
    k = k.reshape(src_len, bsz * heads, head_dim).transpose(0, 1)
    v = v.reshape(src_len, bsz * heads, head_dim).transpose(0, 1)
    dropout_p = mha.dropout if mha.training else 0.0
    if need_weights:
        q_scaled = q * math.sqrt(1.0 / float(head_dim))
        weights = torch.baddbmm(attn_mask, q_scaled, k.transpose(-2, -1)) if attn_mask is not None \
            else torch.bmm(q_scaled, k.transpose(-2, -1))
        weights = F.softmax(weights, dim=-1)
        if dropout_p > 0.0:
            weights = F.dropout(weights, p=dropout_p)
        out = torch.bmm(weights, v).transpose(0, 1).reshape(tgt_len, bsz, embed_dim)
        weights = weights.view(bsz, heads, tgt_len, src_len)
        return out, (weights.mean(dim=1) if average_attn_weights else weights)
    if attn_mask is not None:
        attn_mask = attn_mask.unsqueeze(0) if attn_mask.size(0) == 1 else attn_mask.view(bsz, heads, -1, src_len)
    q, k, v = (t.view(bsz, heads, -1, head_dim) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask, dropout_p, is_causal)
    return out.permute(2, 0, 1, 3).reshape(tgt_len, bsz, embed_dim), None
