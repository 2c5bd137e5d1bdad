"""The LoRAs a merge takes: each file's modules, its weight and its block weights.

Module keys are brought to the spelling the ops write for the model family
(SD1/SD2 diffusers-style UNet keys, SDXL compvis-style), so a LoRA saved in the
other spelling (the WebUI reads both) still finds its layers. Paths or
already-loaded tensors (the WebUI's own objects) are accepted.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import LoraError
from ..networks import load_network_file
from ..networks.keys import UNetLayout, checkpoint_param_to_lora_key, file_key_to_module_name
from ..networks.metadata import family_of_lora
from .blocks import block_weight, parse_block_weights
from .lora_delta import ModuleWeights, group_modules


@dataclass
class LoraInput:
    label: str                              # file name, for messages and metadata
    modules: dict[str, ModuleWeights]       # by module key as the file spells it
    metadata: dict[str, str]
    weight: float = 1.0                     # the user's strength, as in <lora:name:weight>
    blocks: dict[str, float] | None = None  # block name -> weight (blocks.py), None: all 1.0

    def multiplier(self, key: str) -> float:
        return self.weight * block_weight(key, self.blocks)

    def family(self) -> str:
        return family_of_lora(self.metadata, self.modules)


def canonical_key(key: str, family: str) -> str:
    """The key the ops use for this module in `family` (UNet keys re-spelled; others unchanged)."""
    if not key.startswith("lora_unet_"):
        return key
    ldm_name = file_key_to_module_name(key, "ldm", UNetLayout.for_family(family))
    if not ldm_name:
        return key
    return checkpoint_param_to_lora_key(f"model.diffusion_model.{ldm_name}.weight", family) or key


def modules_by_key(inputs: list[LoraInput], family: str) -> dict[str, list[tuple[LoraInput, str]]]:
    """canonical module key -> [(LoRA, the key as that LoRA spells it)], over every module of every LoRA."""
    found: dict[str, list[tuple[LoraInput, str]]] = {}
    for lora in inputs:
        for key in lora.modules:
            found.setdefault(canonical_key(key, family), []).append((lora, key))
    return found


def _per_lora(values: list, count: int, default, what: str) -> list:
    if not values:
        return [default] * count
    if len(values) == 1:
        return list(values) * count
    if len(values) != count:
        raise LoraError(f"{len(values)} {what} were given for {count} LoRA files", where=what,
                        fix=f"Give one {what[:-1]} per LoRA, in the same order, or a single one for all")
    return list(values)


def load_lora_inputs(sources: list[str | Path | Mapping[str, torch.Tensor]], weights: list[float],
                     block_weights: list[str]) -> list[LoraInput]:
    """Read each LoRA and attach its weight and block weights (one value for all, or one per LoRA)."""
    if not sources:
        raise LoraError("No LoRA was given", where="merge", fix="Name at least one LoRA file with --lora")
    if len(weights) > len(sources):
        raise LoraError(f"{len(weights)} weights were given for {len(sources)} LoRA files", where="weights",
                        fix="Give one weight per LoRA, in the same order (missing ones are 1.0)")
    bad = [w for w in weights if not math.isfinite(w)]
    if bad:
        raise LoraError(f"The weight {bad[0]} is not a finite number", where="weights",
                        fix="Give each LoRA a number such as 1, 0.8 or -0.5")
    weights = list(weights) + [1.0] * (len(sources) - len(weights))
    blocks = _per_lora(block_weights, len(sources), "", "block weights")
    inputs = []
    for source, weight, block_text in zip(sources, weights, blocks):
        if isinstance(source, Mapping):
            tensors, metadata, label = dict(source), {}, "LoRA tensors"
        else:
            tensors, metadata = load_network_file(source)
            label = Path(source).name
        parsed = parse_block_weights(block_text, where=f"block weights of {label}") if block_text else None
        inputs.append(LoraInput(label, group_modules(tensors, label), metadata, float(weight), parsed))
    return inputs
