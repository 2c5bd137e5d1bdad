"""Stand-in of the built-in Lora extension's lora_patches.py (v1.10.1).

Constructing LoraPatches replaces, class-wide, `forward` and `_load_from_state_dict` of
torch.nn.Linear, Conv2d, GroupNorm, LayerNorm and MultiheadAttention with the `networks`
module's network_*_forward / network_*_load_state_dict, keeping each original as an attribute
(`networks.originals.Linear_forward` ...) that those functions call; `undo()` puts them back.
"""
from __future__ import annotations

import torch

import networks
from modules import patches

PATCHED = (("Linear", torch.nn.Linear), ("Conv2d", torch.nn.Conv2d), ("GroupNorm", torch.nn.GroupNorm),
           ("LayerNorm", torch.nn.LayerNorm), ("MultiheadAttention", torch.nn.MultiheadAttention))


class LoraPatches:
    def __init__(self):
        for name, cls in PATCHED:
            setattr(self, f"{name}_forward",
                    patches.patch(__name__, cls, "forward", getattr(networks, f"network_{name}_forward")))
            setattr(self, f"{name}_load_state_dict",
                    patches.patch(__name__, cls, "_load_from_state_dict",
                                  getattr(networks, f"network_{name}_load_state_dict")))

    def undo(self):
        for name, cls in PATCHED:
            setattr(self, f"{name}_forward", patches.undo(__name__, cls, "forward"))
            setattr(self, f"{name}_load_state_dict", patches.undo(__name__, cls, "_load_from_state_dict"))
