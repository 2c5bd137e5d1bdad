"""Exponential moving average of the LoRA weights (kept in fp32 on the network's device).

Saved files carry the averaged weights; the live network keeps training on the raw ones.
"""
from __future__ import annotations

import torch


class EmaWeights:
    def __init__(self, network, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().float().clone() for k, v in network.trainable_state().items()}

    @classmethod
    def from_state(cls, state: dict, decay: float) -> "EmaWeights":
        obj = cls.__new__(cls)
        obj.decay, obj.shadow = decay, {k: v.clone() for k, v in state.items()}
        return obj

    @torch.no_grad()
    def update(self, network) -> None:
        for k, v in network.trainable_state().items():
            if k.endswith(".alpha"):
                continue
            self.shadow[k].mul_(self.decay).add_(v.detach().float().to(self.shadow[k].device), alpha=1 - self.decay)

    def state(self) -> dict:
        return {k: v.cpu() for k, v in self.shadow.items()}

    def state_for_save(self, network) -> dict:
        return dict(self.shadow)
