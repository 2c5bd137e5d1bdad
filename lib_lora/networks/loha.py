"""LoHa: dW = (w1_a @ w1_b) * (w2_a @ w2_b) * alpha/rank (Hadamard product of two low-rank pairs).

File tensors as LyCORIS writes them and the WebUI's network_hada.py reads them:
`hada_w1_a` (out, r), `hada_w1_b` (r, in*kh*kw), `hada_w2_a`, `hada_w2_b` the same,
`alpha`. No Tucker core (hada_t1/t2). Init as LyCORIS: w1_b, w2_b normal(1),
w1_a normal(0.1), w2_a zeros, so an untrained module changes nothing.
The product is computed by lycoris.functional.loha.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import NetworkModule


class LohaModule(NetworkModule):
    algo = "loha"
    state_keys = ("hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b")

    def build(self, **options: Any) -> None:
        out_dim = self.weight_shape[0]
        in_dim = math.prod(self.weight_shape[1:])  # a conv's kernel is folded into the input side
        rank = self.rank
        self.hada_w1_a = nn.Parameter(torch.empty(out_dim, rank))
        self.hada_w1_b = nn.Parameter(torch.empty(rank, in_dim))
        self.hada_w2_a = nn.Parameter(torch.empty(out_dim, rank))
        self.hada_w2_b = nn.Parameter(torch.empty(rank, in_dim))
        nn.init.normal_(self.hada_w1_b, std=1.0)
        nn.init.normal_(self.hada_w1_a, std=0.1)
        nn.init.normal_(self.hada_w2_b, std=1.0)
        nn.init.zeros_(self.hada_w2_a)

    def factors(self) -> tuple[torch.Tensor, ...]:
        return (self.hada_w1_a, self.hada_w1_b, self.hada_w2_a, self.hada_w2_b)

    def delta_from(self, *factors: torch.Tensor) -> torch.Tensor:
        # Imported on use: importing lycoris loads its whole package (bitsandbytes, torch._dynamo).
        from lycoris.functional import loha

        w1_a, w1_b, w2_a, w2_b = factors
        # lycoris names the halves by role: *d (down) = *_b, *u (up) = *_a.
        delta = loha.diff_weight(w1_b, w1_a, w2_b, w2_a, None, None, gamma=self.scale())
        return delta.reshape(self.weight_shape)

    def merged_weight_is_cheaper(self) -> bool:
        # Both paths build a full dW, and neither keeps it for backward (recompute.py rebuilds it
        # from the factors there); one op with W + dW saves the second product per layer.
        return True
