"""LoKr: dW = kron(w1, w2) * scale, w2 optionally low-rank (w2_a @ w2_b).

Shapes as LyCORIS writes them and the WebUI's network_lokr.py reads them: the
output and input sizes are each split in two factors (lycoris' `factorization`,
`lokr_factor` -1 = most square): out = a*b, in = c*d; `lokr_w1` (a, c);
`lokr_w2` (b, d[, kh, kw]) full, or `lokr_w2_a` (b, r) and `lokr_w2_b`
(r, d*kh*kw) when the rank is below half the larger side of w2.
Scale: the WebUI takes the rank from `lokr_w2_b`; with a full w2 there is no
rank and it uses 1.0 whatever alpha says, so this module does the same (and
stores alpha = rank there, as LyCORIS does). Init as LyCORIS: w1 and w2_a
kaiming-uniform, w2 / w2_b zeros, so an untrained module changes nothing.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import NetworkModule


class LokrModule(NetworkModule):
    algo = "lokr"
    state_keys = ("lokr_w1", "lokr_w2", "lokr_w2_a", "lokr_w2_b")

    def build(self, lokr_factor: int = -1, **options: Any) -> None:
        # Imported on use, not at module load: see LohaModule.delta_weight.
        from lycoris.functional.general import factorization

        out_dim, in_dim, *kernel = self.weight_shape
        out_a, out_b = factorization(out_dim, lokr_factor)
        in_c, in_d = factorization(in_dim, lokr_factor)
        self.lokr_w1 = nn.Parameter(torch.empty(out_a, in_c))
        nn.init.kaiming_uniform_(self.lokr_w1, a=math.sqrt(5))
        self.full_w2 = self.rank >= max(out_b, in_d) / 2
        if self.full_w2:
            self.lokr_w2 = nn.Parameter(torch.zeros(out_b, in_d, *kernel))
            self.lokr_w2_a = self.lokr_w2_b = None
            self.alpha.fill_(float(self.rank))
        else:
            self.lokr_w2 = None
            self.lokr_w2_a = nn.Parameter(torch.empty(out_b, self.rank))
            self.lokr_w2_b = nn.Parameter(torch.zeros(self.rank, in_d * math.prod(kernel)))
            nn.init.kaiming_uniform_(self.lokr_w2_a, a=math.sqrt(5))

    def scale(self) -> float | torch.Tensor:
        return 1.0 if self.full_w2 else self.alpha / self.rank

    def factors(self) -> tuple[torch.Tensor, ...]:
        """(w1, w2) with a full w2, (w1, w2_a, w2_b) with a low-rank one."""
        if self.full_w2:
            return (self.lokr_w1, self.lokr_w2)
        return (self.lokr_w1, self.lokr_w2_a, self.lokr_w2_b)

    def delta_from(self, *factors: torch.Tensor) -> torch.Tensor:
        from lycoris.functional import lokr

        w1, w2, w2_a, w2_b = (*factors, None, None) if self.full_w2 else (factors[0], None, *factors[1:])
        delta = lokr.kron_weight(w1, None, None, w2, w2_a, w2_b, None, scale=self.scale())
        return delta.reshape(self.weight_shape)

    def merged_weight_is_cheaper(self) -> bool:
        # Both paths build a full dW, and neither keeps it for backward (recompute.py rebuilds it
        # from the factors there); one op with W + dW saves the second product per layer.
        return True
