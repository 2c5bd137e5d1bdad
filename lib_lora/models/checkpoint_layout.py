"""Which shipped diffusers config a single-file checkpoint needs, from its key names and a few shapes.

Reads only the header of a .safetensors file (names and shapes, no tensor data)
and a .ckpt through checkpoint_io's weights-only, memory-mapped load, so an SDXL
file is classified in well under a second without holding its weights. The
family comes from checkpoint_io.detect_family (one marker key per family); the
shapes then confirm that the UNet is the stock one of that family, so an
inpainting model (9 input channels), the SDXL refiner (384 channels, 1280-wide
context) or another custom UNet is refused with what was found rather than
loaded into the wrong config. v-prediction leaves no trace in the weights: an
SD2.x checkpoint is the 768-v model only when `model.v_parameterization` says so.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint_io import StateReader, detect_family
from ..errors import ModelError

UNET = "model.diffusion_model."
UNET_IN = UNET + "input_blocks.0.0.weight"


@dataclass(frozen=True)
class UnetShape:
    """What tells the stock UNets apart: first conv (out, in, k, k), cross-attention width and
    whether the transformers project in with a Linear (SD2, SDXL) or a 1x1 conv (SD1)."""
    first_conv: tuple[int, ...]
    context_dim: int
    linear_projection: bool


STOCK_UNETS = {
    "sd1": UnetShape((320, 4, 3, 3), 768, False),
    "sd2": UnetShape((320, 4, 3, 3), 1024, True),
    "sdxl": UnetShape((320, 4, 3, 3), 2048, True),
}
FAMILY_NAMES = {"sd1": "Stable Diffusion 1.x", "sd2": "Stable Diffusion 2.x", "sdxl": "SDXL"}


@dataclass(frozen=True)
class CheckpointLayout:
    family: str           # 'sd1' | 'sd2' | 'sdxl'
    config_name: str      # folder under lib_lora/models/configs/
    unet: UnetShape


def config_name_for(family: str, v_parameterization: bool) -> str:
    """The shipped config folder of a stock checkpoint of `family` (SD2: 512 eps or 768 v)."""
    if family == "sd2":
        return "sd21_v" if v_parameterization else "sd21_base"
    return {"sd1": "sd15", "sdxl": "sdxl_base"}[family]


def read_family(source: str | Path | Mapping[str, torch.Tensor]) -> str:
    """'sd1' | 'sd2' | 'sdxl' of a checkpoint file (or state dict) from its key names alone."""
    with StateReader(source) as reader:
        return detect_family(reader.keys(), reader.label)


def detect_layout(source: str | Path | Mapping[str, torch.Tensor],
                  v_parameterization: bool = False) -> CheckpointLayout:
    """Family and shipped config of a stock SD1.x / SD2.x / SDXL-base checkpoint; anything else is
    a ModelError saying what was found. `source` may be a state dict (meta tensors do)."""
    with StateReader(source) as reader:
        family = detect_family(reader.keys(), reader.label)
        found = _unet_shape(reader)
        label = reader.label
    expected = STOCK_UNETS[family]
    if found != expected:
        raise ModelError(
            f"This {FAMILY_NAMES[family]} checkpoint has a UNet we ship no config for: {_describe(found)}; "
            f"the stock one has {_describe(expected)}{_hint(family, found)}", where=label,
            fix="Set model.config_dir to a diffusers folder of this exact architecture (model_index.json, "
                "unet/, vae/, text_encoder/, tokenizer/, scheduler/), or convert the model to a diffusers folder")
    return CheckpointLayout(family, config_name_for(family, v_parameterization), found)


def _unet_shape(reader: StateReader) -> UnetShape:
    keys = reader.keys()
    if UNET_IN not in keys:
        raise ModelError("The checkpoint has text-encoder weights but no UNet (model.diffusion_model.*)",
                         where=reader.label, fix="Use a full checkpoint, not a text encoder or a pruned part")
    cross_k = next((k for k in keys if k.startswith(UNET) and k.endswith("attn2.to_k.weight")), None)
    if cross_k is None:
        raise ModelError("The checkpoint's UNet has no cross-attention layers", where=reader.label,
                         fix="Use a text-to-image Stable Diffusion checkpoint")
    proj_in = cross_k.split("transformer_blocks.")[0] + "proj_in.weight"
    linear = proj_in in keys and len(reader.shape(proj_in)) == 2
    return UnetShape(reader.shape(UNET_IN), reader.shape(cross_k)[-1], linear)


def _describe(shape: UnetShape) -> str:
    channels, inputs = shape.first_conv[0], shape.first_conv[1]
    projection = "linear" if shape.linear_projection else "1x1-conv"
    return (f"{channels} base channels, {inputs} input channels, {shape.context_dim}-wide text context, "
            f"{projection} attention projections")


def _hint(family: str, found: UnetShape) -> str:
    inputs = found.first_conv[1] if len(found.first_conv) > 1 else 0
    if inputs == 9:
        return " (an inpainting model: LoRAs are trained on the base model it was made from)"
    if family == "sdxl" and found.context_dim == 1280:
        return " (the SDXL refiner: LoRAs are trained on SDXL base)"
    return ""
