"""sd-scripts' `ss_*` and SAI `modelspec.*` metadata for a LoRA file; every value a str.

Key for key and format for format what kohya-ss/sd-scripts' train_network.py writes for a
run from a folder of `<repeats>_<name>` image folders (its --train_data_dir path), so the
WebUI's and Forge's Lora card, Civitai and sd-scripts' own tools read our files as theirs:
- `ss_bucket_info` is {"buckets": {"0": {"resolution": [w, h], "count": n}, ...},
  "mean_img_ar_error": x} (counts include repeats), or "null" without bucketing;
- `ss_num_train_images` / `ss_num_reg_images` count images x repeats;
- `ss_lr_warmup_steps` is a number of steps;
- options our trainer does not have are written with the value sd-scripts writes when
  they are not used (SD_SCRIPTS_DEFAULTS), so no key is missing;
- `ss_sd_model_hash` / `ss_new_sd_model_hash` (the WebUI's old 8-digit and full sha256
  hashes of the checkpoint file) only when the base model is a file, as sd-scripts does.
LyCORIS types (LoHa, LoKr, and DoRA on any type) are written as sd-scripts does when it trains
with `--network_module lycoris.kohya`: ss_network_module 'lycoris.kohya' and ss_network_args
{"conv_dim", "conv_alpha", "algo", ...}.

This module is the one home of that metadata: `build_metadata` for trained files, and
`tool_metadata` for the LoRAs the tools (extract, merge) write from whole models; both take
their `modelspec.*` block from `modelspec_metadata`. `family_of_lora` reads the family back.
"""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterable

from .. import __version__
from ..config import NetworkConfig

MODELSPEC_VERSION = "1.0.1"
ARCHITECTURES = {("sd1", "eps"): "stable-diffusion-v1", ("sd1", "v"): "stable-diffusion-v1",
                 ("sd2", "eps"): "stable-diffusion-v2-512", ("sd2", "v"): "stable-diffusion-v2-768-v",
                 ("sdxl", "eps"): "stable-diffusion-xl-v1-base", ("sdxl", "v"): "stable-diffusion-xl-v1-base"}
# modelspec.implementation as sd-scripts' sai_model_spec writes it: SDXL is Stability's sgm code.
SDXL_IMPLEMENTATION = "https://github.com/Stability-AI/generative-models"
# The size each family's base model was trained at: the modelspec.resolution of a LoRA the tools
# make from whole models (extract, merge), where no training resolution exists.
NATIVE_RESOLUTION = {"sd1": 512, "sd2": 512, "sdxl": 1024}

# Every ss_* key sd-scripts writes that a run's `training` fields may lack (options this trainer
# does not have, or a caller that passes only some), with the str() sd-scripts writes when the
# option is left at its default (argparse defaults in library/train_util.py and train_network.py).
SD_SCRIPTS_DEFAULTS = {
    "ss_num_validation_images": "0", "ss_full_fp16": "False", "ss_lowram": "False",
    "ss_sd_scripts_commit_hash": "(unknown)", "ss_caption_dropout_every_n_epochs": "0",
    "ss_face_crop_aug_range": "None", "ss_scale_weight_norms": "None", "ss_ip_noise_gamma": "None",
    "ss_noise_offset_random_strength": "False", "ss_ip_noise_gamma_random_strength": "False",
    "ss_loss_type": "l2", "ss_huber_schedule": "snr", "ss_huber_scale": "1.0", "ss_huber_c": "0.1",
    "ss_fp8_base": "False", "ss_fp8_base_unet": "False", "ss_validation_seed": "None",
    "ss_validation_split": "0.0", "ss_max_validation_steps": "None", "ss_validate_every_n_epochs": "None",
    "ss_validate_every_n_steps": "None", "ss_resize_interpolation": "None", "ss_network_dropout": "None",
    "ss_multires_noise_discount": "0.3", "ss_adaptive_noise_scale": "None", "ss_max_grad_norm": "1.0",
    "ss_bucket_no_upscale": "False", "ss_reg_dataset_dirs": "{}", "ss_random_crop": "False",
}


# ss_optimizer names the optimizer class by module path, as sd-scripts' get_optimizer does
# (optimizer_class.__module__ + "." + __name__); the paths of the classes training/optim.py builds.
OPTIMIZER_CLASSES = {
    "AdamW": "torch.optim.adamw.AdamW", "AdamW8bit": "bitsandbytes.optim.adamw.AdamW8bit",
    "Lion": "lion_pytorch.lion_pytorch.Lion", "Lion8bit": "bitsandbytes.optim.lion.Lion8bit",
    "Prodigy": "prodigyopt.prodigy.Prodigy", "DAdaptAdam": "dadaptation.dadapt_adam.DAdaptAdam",
    "Adafactor": "transformers.optimization.Adafactor", "SGDNesterov": "torch.optim.sgd.SGD",
    "AdamWScheduleFree": "schedulefree.adamw_schedulefree.AdamWScheduleFree",
}


def optimizer_label(name: str, kwargs: dict[str, Any]) -> str:
    """ss_optimizer as sd-scripts writes it: 'bitsandbytes.optim.adamw.AdamW8bit(weight_decay=0.01)'."""
    args = ",".join(f"{k}={v}" for k, v in kwargs.items())
    return OPTIMIZER_CLASSES.get(name, name) + (f"({args})" if args else "")


def base_model_version(family: str, parameterization: str = "eps") -> str:
    """'sd_v1' | 'sd_v2' | 'sd_v2_v' | 'sdxl_base_v1-0' (ss_base_model_version), as sd-scripts writes it."""
    if family == "sdxl":
        return "sdxl_base_v1-0"
    version = "sd_v2" if family == "sd2" else "sd_v1"
    return version + ("_v" if parameterization == "v" else "")


def family_of_lora(metadata: dict[str, str], keys: Iterable[str]) -> str:
    """Best guess of the family a LoRA file was made for: ss_base_model_version / ss_v2 (as
    base_model_version writes them), else its keys (two text encoders, or sgm-style UNet names,
    are SDXL's); 'sd1' when nothing tells."""
    keys = list(keys)
    version = str(metadata.get("ss_base_model_version", ""))
    if version.startswith("sdxl") or any(k.startswith(("lora_te1_", "lora_te2_")) for k in keys):
        return "sdxl"
    if version.startswith("sd_v2") or str(metadata.get("ss_v2", "")) == "True":
        return "sd2"
    if any(k.startswith("lora_unet_input_blocks_") for k in keys):
        return "sdxl"
    return "sd1"


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
        # The DoRA magnitude is kept per output row ([out, 1] / [out, 1, 1, 1]): LyCORIS' kohya
        # wrapper reads this argument (True is its default); ComfyUI and Forge detect it by shape.
        args["dora_wd"] = "True"
        args["wd_on_output"] = "True"
    if cfg.algo == "lokr":
        args["factor"] = str(cfg.lokr_factor)
    if cfg.dropout:
        args["dropout"] = str(cfg.dropout)
    return "lycoris.kohya", args


BucketEntry = tuple[tuple[int, int], tuple[int, int], int]  # (bucket (w, h), image size (w, h), repeats)


def bucket_info(entries: Iterable[BucketEntry]) -> dict[str, Any]:
    """sd-scripts' dataset.bucket_info: one numbered entry per used bucket, smallest area first,
    with its resolution [w, h] and image count including repeats, and the mean absolute
    difference between each image's aspect ratio (w / h) and its bucket's, counted once per image."""
    counts: dict[tuple[int, int], int] = {}
    errors: list[float] = []
    for bucket, (width, height), repeats in entries:
        bucket = (int(bucket[0]), int(bucket[1]))
        counts[bucket] = counts.get(bucket, 0) + int(repeats)
        errors.append(abs(bucket[0] / bucket[1] - width / height))
    order = sorted(counts, key=lambda b: (b[0] * b[1], b))
    return {"buckets": {str(i): {"resolution": list(b), "count": counts[b]} for i, b in enumerate(order)},
            "mean_img_ar_error": sum(errors) / len(errors) if errors else 0}


_FILE_HASHES: dict[tuple[str, int, int], tuple[str, str]] = {}


def checkpoint_hashes(path: str | os.PathLike) -> tuple[str, str] | None:
    """(ss_sd_model_hash, ss_new_sd_model_hash) of a checkpoint file as sd-scripts computes them:
    the WebUI's old model hash (sha256 of the 64 KiB at 1 MiB, first 8 hex digits) and the full
    sha256. None for a folder or a missing file (sd-scripts writes neither then). Computed once
    per file (size and mtime) per process: hashing a 7 GB checkpoint takes seconds."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    if not os.path.isfile(path):
        return None
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_HASHES:
        full = hashlib.sha256()
        with open(path, "rb") as f:
            f.seek(0x100000)
            legacy = hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
            f.seek(0)
            for chunk in iter(lambda: f.read(1 << 20), b""):
                full.update(chunk)
        _FILE_HASHES[key] = (legacy, full.hexdigest())
    return _FILE_HASHES[key]


def _stringify(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
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
            names without the 'ss_' prefix get it. dicts/lists are JSON-encoded, tuples and the rest
            str() (sd-scripts writes ss_resolution as "(512, 512)").
        when: modelspec.date (default: now).
    Returns: str -> str, sshs_* hashes not yet included (save_network_file adds them). With `training`
    given, every key sd-scripts writes is present (SD_SCRIPTS_DEFAULTS fill the gaps).
    """
    width, height = (resolution, resolution) if isinstance(resolution, int) else resolution
    module, args = network_module_and_args(cfg)
    meta: dict[str, str] = {}
    for key, value in (training or {}).items():
        name = key if key.startswith(("ss_", "modelspec.", "sshs_")) else f"ss_{key}"
        meta[name] = _stringify(value)
    if training:
        for key, value in SD_SCRIPTS_DEFAULTS.items():
            meta.setdefault(key, value)
    meta.update({
        "ss_network_module": module,
        "ss_network_dim": str(cfg.dim),
        "ss_network_alpha": str(cfg.alpha),
        "ss_network_args": json.dumps(args),
        "ss_base_model_version": base_model_version(family, parameterization),
        "ss_v2": str(family == "sd2"),
        "ss_resolution": meta.get("ss_resolution", str((width, height))),
    })
    meta.update(modelspec_metadata(family, parameterization, title=title, resolution=(width, height), when=when))
    if meta.get("ss_clip_skip", "None") != "None":  # sd-scripts: modelspec.encoder_layer = clip_skip when set
        meta["modelspec.encoder_layer"] = meta["ss_clip_skip"]
    if not args:  # sd-scripts writes no ss_network_args for a plain LoRA
        del meta["ss_network_args"]
    return meta


def modelspec_metadata(family: str, parameterization: str, *, title: str, resolution: tuple[int, int],
                       when: dt.datetime | None = None) -> dict[str, str]:
    """The SAI `modelspec.*` keys of a LoRA file (sd-scripts' sai_model_spec for a LoRA).

    resolution: (width, height); when: modelspec.date, local time to the second (default: now)."""
    width, height = resolution
    return {
        "modelspec.sai_model_spec": MODELSPEC_VERSION,
        "modelspec.architecture": f"{ARCHITECTURES[(family, parameterization)]}/lora",
        "modelspec.implementation": SDXL_IMPLEMENTATION if family == "sdxl" else "diffusers",
        "modelspec.title": title,
        "modelspec.resolution": f"{width}x{height}",
        "modelspec.date": (when or dt.datetime.now()).replace(microsecond=0).isoformat(),
        "modelspec.prediction_type": "v" if parameterization == "v" else "epsilon",
        "modelspec.implementation_version": f"train-lora/{__version__}",
    }


def tool_metadata(family: str, output: str | os.PathLike, dim: str, alpha: str, *, conv_dim: int = 0,
                  v_parameterization: bool = False, comment: str = "", base_name: str = "",
                  when: dt.datetime | None = None) -> dict[str, str]:
    """sd-scripts-style metadata for a plain LoRA the tools wrote from whole models (extracted or
    merged into one LoRA): the keys sd-scripts' extract/merge scripts write, titled after the
    output file. dim/alpha are str: a rank, or 'Dynamic' when ranks differ per layer; conv_dim > 0
    adds ss_network_args with the 3x3-conv rank."""
    title = Path(output).stem
    parameterization = "v" if v_parameterization else "eps"
    side = NATIVE_RESOLUTION[family]
    meta = {
        "ss_output_name": title,
        "ss_network_module": "networks.lora",
        "ss_network_dim": dim,
        "ss_network_alpha": alpha,
        "ss_v2": str(family == "sd2"),
        "ss_base_model_version": base_model_version(family, parameterization),
        "ss_sd_model_name": base_name,
        "ss_training_comment": comment,
        "ss_training_started_at": str(int(time.time())),
    }
    if conv_dim:
        meta["ss_network_args"] = json.dumps({"conv_dim": str(conv_dim), "conv_alpha": str(conv_dim)})
    meta.update(modelspec_metadata(family, parameterization, title=title, resolution=(side, side), when=when))
    return meta
