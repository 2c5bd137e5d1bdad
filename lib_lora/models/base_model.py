"""The base model of a headless run, from `[model]` of the config: one loader for the CLI and the standalone tab.

'' or 'tiny' is the built-in tiny model (demo, tests); anything else is a diffusers
folder or a single-file checkpoint (converted with the shipped config of its family,
or `model.config_dir`). Weights go to the device in the run's precision.
"""
from __future__ import annotations

from typing import Any


def resolve_device(device: str) -> str:
    """The torch device for training.device ('auto': a GPU when there is one); one that this
    machine lacks is a LoraError, not torch's assertion inside .to()."""
    from ..device_check import check_device

    return check_device(device, "training.device")


def load_base_model(model_cfg: Any, device: str = "auto", mixed_precision: str = "no"):
    """A DiffusersModel for `model_cfg` (a config.ModelConfig) on `device`."""
    import torch

    from .diffusers_adapter import DiffusersModel, load_diffusers_model

    device = resolve_device(device)
    if model_cfg.pretrained in ("", "tiny"):
        from .tiny import build_tiny_sd1

        return DiffusersModel(build_tiny_sd1(seed=0), name="tiny", device=device)
    dtype = torch.float32 if device == "cpu" or mixed_precision == "no" else \
        (torch.bfloat16 if mixed_precision == "bf16" else torch.float16)
    return load_diffusers_model(model_cfg.pretrained, device=device, dtype=dtype,
                                config_dir=model_cfg.config_dir or None,
                                v_parameterization=model_cfg.v_parameterization)
