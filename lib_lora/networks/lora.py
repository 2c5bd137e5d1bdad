"""LoRA (LierLa) on Linear and 1x1 Conv, and LoCon (C3Lier) on 3x3 Conv: dW = up @ down * alpha/rank.

File tensors, as sd-scripts writes them and the WebUI's network_lora.py reads them:
`lora_down.weight` (r, in) | (r, in, kh, kw), `lora_up.weight` (out, r) | (out, r, 1, 1), `alpha`.
The down conv keeps the wrapped conv's kernel, stride and padding, so the forward
is up(down(x)), never the full weight. Only DoRA, which rescales the whole weight,
runs the layer with W + dW: through recompute.py (base.py), which keeps down, up and
the magnitude for backward, not the weight-sized W + dW. Init as sd-scripts: down kaiming-uniform,
up zeros, so an untrained module changes nothing.
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from .base import NetworkModule


class LoraModule(NetworkModule):
    algo = "lora"
    state_keys = ("lora_down.weight", "lora_up.weight")

    def build(self, **options: Any) -> None:
        layer, rank = self.layer, self.rank
        if isinstance(layer, nn.Conv2d):
            self.lora_down = nn.Conv2d(layer.in_channels, rank, layer.kernel_size, layer.stride,
                                       layer.padding, layer.dilation, bias=False)
            self.lora_up = nn.Conv2d(rank, layer.out_channels, 1, bias=False)
        else:
            self.lora_down = nn.Linear(layer.in_features, rank, bias=False)
            self.lora_up = nn.Linear(rank, layer.out_features, bias=False)
        nn.init.kaiming_uniform_(self.lora_down.weight, a=math.sqrt(5))
        nn.init.zeros_(self.lora_up.weight)

    def factors(self) -> tuple[torch.Tensor, ...]:
        # Used where W + dW is built (DoRA, MHA projections): recompute.py rebuilds it from these.
        return (self.lora_down.weight, self.lora_up.weight)

    def delta_from(self, *factors: torch.Tensor) -> torch.Tensor:
        # up (out, r[, 1, 1]) @ down (r, in[, kh, kw]) flattened: the (out, in[, kh, kw]) update.
        down, up = factors
        return (up.flatten(1) @ down.flatten(1)).reshape(self.weight_shape) * self.scale()

    def bypass(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self.lora_down.weight.dtype
        return self.lora_up(self.lora_down(x.to(dtype))) * self.scale()
