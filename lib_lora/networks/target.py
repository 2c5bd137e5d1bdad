"""NetworkTarget: the network's input, one model part a LoRA attaches to.

It lives with the networks (create_network, network_keys and the detectors take a list of
them) so that networks/ depends on no model backend: a model adapter (models/) builds
its targets from whatever object it wraps, and tests hand networks/ bare modules.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import nn


@dataclass
class NetworkTarget:
    """One model part a LoRA attaches to, and how its modules are named in files.

    prefix: the kohya file prefix, 'lora_unet', 'lora_te', 'lora_te1' or 'lora_te2'.
    root:   the module whose named_modules() are scanned.
    naming: how `root`'s module names are spelt, so networks/keys.py can turn them
            into sd-scripts' file keys: 'diffusers' (UNet2DConditionModel), 'ldm'
            (ldm UNetModel of SD1/SD2), 'sgm' (SDXL UNetModel), 'hf_clip'
            (transformers CLIPTextModel, v4 or v5 paths), 'open_clip' (OpenCLIP
            text transformer with nn.MultiheadAttention).
    kind:   'unet' or 'text_encoder' (chooses the learning rate and the targets).
    """
    prefix: str
    root: nn.Module
    naming: str
    kind: str
