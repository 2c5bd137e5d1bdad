"""ProjectionSlot: one row chunk of a MultiheadAttention's fused in-projection, shaped like a Linear.

SD2's and SDXL's OpenCLIP text encoders keep q, k and v in one `in_proj_weight`
(3E, E). A slot is a view on one third of it (`weight`, `bias`, `in_features`,
`out_features`), so an algorithm module wraps it exactly as it wraps a Linear and
merging changes the fused weight in place. It lives below both base.py (which
accepts it as a wrappable layer) and mha.py (which builds the slots), so neither
has to import the other.
"""
from __future__ import annotations

import torch
from torch import nn


class ProjectionSlot(nn.Module):
    """A Linear-like window on one row chunk of an MHA's fused in-projection."""

    def __init__(self, mha: nn.MultiheadAttention, index: int):
        super().__init__()
        self._mha = [mha]  # a list keeps the MHA out of this module's children
        self.index = index
        self.in_features = self.out_features = mha.embed_dim

    @property
    def weight(self) -> torch.Tensor:
        e = self.out_features
        return self._mha[0].in_proj_weight[self.index * e:(self.index + 1) * e]

    @property
    def bias(self) -> torch.Tensor | None:
        bias = self._mha[0].in_proj_bias
        e = self.out_features
        return None if bias is None else bias[self.index * e:(self.index + 1) * e]
