"""sd-scripts' `ss_*` and SAI `modelspec.*` metadata for a LoRA file; every value a str.

What the WebUI reads (webui-api.md 2.2): ss_base_model_version / ss_v2 for the
model-version filter, ss_output_name as alias, ss_tag_frequency, ss_dataset_dirs,
ss_network_module. LyCORIS types (LoHa, LoKr, and DoRA on any type) are written
as sd-scripts does when it trains with `--network_module lycoris.kohya`:
ss_network_module 'lycoris.kohya' and ss_network_args {"conv_dim", "conv_alpha", "algo", ...}.
"""
from __future__ import annotations

import datetime as dt
import json
from typing import Any

from ..config import NetworkConfig

MODELSPEC_VERSION = "1.0.1"
ARCHITECTURES = {("sd1", "eps"): "stable-diffusion-v1", ("sd1", "v"): "stable-diffusion-v1",
                  ("sd2", "eps"): "stable-diffusion-v2-512", ("sd2", "v"): "stable-diffusion-v2-768-v",
                  ("sdxl", "eps"): "stable-diffusion-xl-v1-base", ("sdxl", "v"): "stable-diffusion-xl-v1-base"}


def base_model_version(family: str, parameterization: str = "eps") -> str:
    """'sd_v1' | 'sd_v2' | 'sd_v2_v' | 'sdxl_base_v1-0' (ss_base_model_version), as sd-scripts writes it."""
    if family == "sdxl":
        return "sdxl_base_v1-0"
    version = "sd_v2" if family == "sd2" else "sd_v1"
    return version + ("_v" if parameterization == "v" else "")


def network_module_and_args(cfg: NetworkConfig) -> tuple[str, dict[str, str]]:
    """(ss_network_module, ss_network_args) for the configured network."""
    convs = cfg.algo != "lora" or cfg.targets == "attn_ff_conv"
    args: dict[str, str] = {}
    if convs:
        args.update(conv_dim=str(cfg.conv_dim), conv_alpha=str(cfg.conv_alpha))
    if cfg.algo in ("lora", "locon") and not cfg.dora:
        return "networks.lora", args
    args["algo"] = cfg.algo
    if cfg.dora:
        args["dora_wd"] = "True"
    if cfg.algo == "lokr":
        args["factor"] = str(cfg.lokr_factor)
    if cfg.dropout:
        args["dropout"] = str(cfg.dropout)
    return "lycoris.kohya", args


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value)
    return str(value)


def build_metadata(cfg: NetworkConfig, family: str, parameterization: str = "eps", *, title: str,
                   resolution: int | tuple[int, int] = 512, training: dict[str, Any] | None = None,
                   when: dt.datetime | None = None) -> dict[str, str]:
    """The metadata dict for save_network_file().

    Args:
        cfg: the network configuration (dims, alphas, algorithm).
        family: 'sd1' | 'sd2' | 'sdxl'; parameterization: 'eps' | 'v'.
        title: shown as modelspec.title (usually the output name).
        resolution: training size, int or (width, height).
        training: sd-scripts training fields, e.g. {'ss_epoch': 3, 'ss_tag_frequency': {...}};
            names without the 'ss_' prefix get it. dicts/lists are JSON-encoded, the rest str().
        when: modelspec.date (default: now).
    Returns: str -> str, sshs_* hashes not yet included (save_network_file adds them).
    """
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    module, args = network_module_and_args(cfg)
    meta: dict[str, str] = {}
    for key, value in (training or {}).items():
        name = key if key.startswith(("ss_", "modelspec.", "sshs_")) else f"ss_{key}"
        meta[name] = _stringify(value)
    meta.update({
        "ss_network_module": module,
        "ss_network_dim": str(cfg.dim),
        "ss_network_alpha": str(cfg.alpha),
        "ss_network_args": json.dumps(args),
        "ss_base_model_version": base_model_version(family, parameterization),
        "ss_v2": str(family == "sd2"),
        "ss_resolution": meta.get("ss_resolution", str((width, height))),
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{ARCHITECTURES[(family, parameterization)]}/lora",
        "modelspec.implementation": ("https://github.com/Stability-AI/generative-models"
                                     if family == "sdxl" else "diffusers"),
        "modelspec.title": title,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": (when or dt.datetime.now()).replace(microsecond=0).isoformat(),
        "modelspec.prediction_type": "v" if parameterization == "v" else "epsilon",
    })
    if not args:  # sd-scripts writes no ss_network_args for a plain LoRA
        del meta["ss_network_args"]
    return meta
