"""OpenCLIP attention (nn.MultiheadAttention) as four updates: q, k, v and out projections.

SD2's and SDXL's second text encoder use torch's MultiheadAttention with one fused
`in_proj_weight` (3E, E). sd-scripts' files (HF naming) and the WebUI's loader
want separate `..._self_attn_q_proj/k_proj/v_proj/out_proj` keys, and the WebUI
needs all four for an MHA (reference/webui-api.md 2.3). So each row chunk of
`in_proj_weight` gets its own algorithm module over a `ProjectionSlot` (a view,
not a copy), plus one on `out_proj`. MultiheadAttention's forward reads its
weights directly instead of calling `out_proj`, so the adapter replaces the
MHA's instance forward with torch's functional attention on the updated weights.
"""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import NetworkModule
from .projection_slot import ProjectionSlot

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
