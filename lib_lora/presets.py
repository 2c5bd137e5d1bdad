"""Training presets (character / style / concept) and importers for other trainers' configs.

A preset is a set of dotted overrides on TrainConfig's defaults, taken from
shared/domain.md. Presets the user saves are plain TrainConfig TOML files.
Two foreign formats are read into a TrainConfig: an sd-scripts `--config_file`
TOML (argparse option names, sections flattened as sd-scripts itself does) and
a kohya_ss GUI JSON preset. Options we do not model are listed, never silently
dropped, so the user sees what did not come over.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import options
from .config import TrainConfig, dumps_train_config
from .errors import ConfigError, LoraError

PRESETS: dict[str, dict[str, Any]] = {
    # LoRA/LoCon for characters; about 1000 steps minimum at UNet LR 1e-4; flip off (asymmetric features)
    "character": {"network.algo": "lora", "network.dim": 32, "network.alpha": 16.0, "training.epochs": 10,
                  "training.unet_lr": 1e-4, "training.text_encoder_lr": 5e-5, "training.lr_scheduler": "cosine",
                  "training.lr_warmup": 0.05, "dataset.shuffle_caption": True, "dataset.keep_tokens": 1,
                  "dataset.flip_aug": False, "network.targets": "attn_ff"},
    # LoHa for styles, smaller dim; styles need about 2500 steps; flipping a style is harmless
    "style": {"network.algo": "loha", "network.dim": 8, "network.alpha": 4.0, "network.conv_dim": 4,
              "network.conv_alpha": 1.0, "network.targets": "attn_ff_conv", "training.epochs": 15,
              "training.unet_lr": 1e-4, "training.text_encoder_lr": 5e-5, "training.lr_scheduler": "cosine",
              "training.lr_warmup": 0.05, "dataset.shuffle_caption": True, "dataset.keep_tokens": 1,
              "dataset.flip_aug": True},
    # concepts need the most steps (about 3000); LoCon catches shapes the attention layers miss
    "concept": {"network.algo": "locon", "network.dim": 32, "network.alpha": 16.0, "network.conv_dim": 8,
                "network.conv_alpha": 4.0, "network.targets": "attn_ff_conv", "training.epochs": 15,
                "training.unet_lr": 1e-4, "training.text_encoder_lr": 5e-5, "training.lr_scheduler": "cosine",
                "training.lr_warmup": 0.05, "dataset.shuffle_caption": True, "dataset.keep_tokens": 1},
}


@dataclass
class ImportedConfig:
    config: TrainConfig
    applied: list[str] = field(default_factory=list)     # our dotted names that were set
    ignored: list[str] = field(default_factory=list)     # foreign keys we do not model (or bad values)

    def summary(self) -> str:
        text = f"Imported {len(self.applied)} options"
        if self.ignored:
            text += f"; not imported ({len(self.ignored)}): " + ", ".join(self.ignored[:25])
            text += " ..." if len(self.ignored) > 25 else ""
        return text


def apply_preset(cfg: TrainConfig, name: str) -> TrainConfig:
    """A copy of `cfg` with the preset's values; paths, names and prompts are kept."""
    if name not in PRESETS:
        raise LoraError(f"There is no preset {name!r}", where="presets", fix="Pick one of " + ", ".join(PRESETS))
    flat = options.flatten(cfg)
    flat.update(PRESETS[name])
    return config_from_flat(flat)


def config_from_flat(flat: dict[str, Any]) -> TrainConfig:
    cfg = options.from_dict(TrainConfig, options.unflatten(flat))
    options.validate(cfg)
    return cfg


def save_preset(cfg: TrainConfig, path: str | Path) -> Path:
    from .fileio import write_text
    return write_text(path, dumps_train_config(cfg))


def load_preset(path: str | Path) -> ImportedConfig:
    """Read any supported file: our TOML, an sd-scripts TOML or a kohya_ss JSON preset."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LoraError(f"Cannot read the preset file: {e}", where=str(path),
                        fix="Choose a .toml or .json file saved by Train LoRA, sd-scripts or kohya_ss") from None
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except ValueError as e:
            raise LoraError(f"The JSON file cannot be read: {e}", where=str(path),
                            fix="Export the preset again from kohya_ss (Save configuration)") from None
        return import_kohya_json(data, str(path))
    data = options.loads_toml(text, str(path))
    ours = set(options.to_dict(TrainConfig()))
    if data and all(isinstance(v, dict) for v in data.values()) and set(data) <= ours:
        cfg = options.from_dict(TrainConfig, data)
        options.validate(cfg)
        return ImportedConfig(cfg, sorted(options.flatten(cfg)))
    return import_sd_scripts_toml(data, str(path))


# sd-scripts option name -> our dotted name (values that need more than a copy are handled below)
SD_SCRIPTS_MAP = {
    "pretrained_model_name_or_path": "model.pretrained", "v_parameterization": "model.v_parameterization",
    "clip_skip": "model.clip_skip", "train_data_dir": "dataset.train_dir", "reg_data_dir": "dataset.reg_dir",
    "caption_extension": "dataset.caption_extension", "enable_bucket": "dataset.enable_bucket",
    "min_bucket_reso": "dataset.min_bucket_reso", "max_bucket_reso": "dataset.max_bucket_reso",
    "bucket_reso_steps": "dataset.bucket_reso_steps", "bucket_no_upscale": "dataset.bucket_no_upscale",
    "shuffle_caption": "dataset.shuffle_caption", "keep_tokens": "dataset.keep_tokens",
    "keep_tokens_separator": "dataset.keep_tokens_separator", "caption_dropout_rate": "dataset.caption_dropout_rate",
    "caption_tag_dropout_rate": "dataset.caption_tag_dropout_rate", "max_token_length": "dataset.max_token_length",
    "flip_aug": "dataset.flip_aug", "color_aug": "dataset.color_aug", "prior_loss_weight": "dataset.prior_loss_weight",
    "network_dim": "network.dim", "network_alpha": "network.alpha", "network_dropout": "network.dropout",
    "max_train_epochs": "training.epochs", "epoch": "training.epochs", "max_train_steps": "training.max_train_steps",
    "train_batch_size": "training.batch_size", "gradient_accumulation_steps": "training.gradient_accumulation_steps",
    "unet_lr": "training.unet_lr", "text_encoder_lr": "training.text_encoder_lr",
    "lr_scheduler_num_cycles": "training.lr_scheduler_num_cycles",
    "lr_scheduler_power": "training.lr_scheduler_power", "max_grad_norm": "training.max_grad_norm",
    "mixed_precision": "training.mixed_precision", "gradient_checkpointing": "training.gradient_checkpointing",
    "sdpa": "training.sdpa", "min_snr_gamma": "training.min_snr_gamma", "noise_offset": "training.noise_offset",
    "adaptive_noise_scale": "training.adaptive_noise_scale",
    "multires_noise_iterations": "training.multires_noise_iterations",
    "multires_noise_discount": "training.multires_noise_discount", "zero_terminal_snr": "training.zero_terminal_snr",
    "debiased_estimation_loss": "training.debiased_estimation",
    "cache_text_encoder_outputs": "training.cache_text_encoder_outputs", "seed": "training.seed",
    "output_dir": "output.output_dir", "output_name": "output.output_name",
    "save_every_n_epochs": "output.save_every_n_epochs", "save_last_n_epochs": "output.save_last_n_epochs",
    "save_state": "output.save_state", "training_comment": "output.comment",
    "sample_every_n_epochs": "sample.every_n_epochs", "sample_sampler": "sample.sampler",
}
# kohya_ss GUI JSON names that differ from sd-scripts' (the rest share sd-scripts' names)
KOHYA_GUI_MAP = {"epoch": "training.epochs", "optimizer": "training.optimizer"}
OPTIMIZER_NAMES = {"adamw": "AdamW", "adamw8bit": "AdamW8bit", "lion": "Lion", "lion8bit": "Lion8bit",
                   "prodigy": "Prodigy", "dadaptation": "DAdaptAdam", "dadaptadam": "DAdaptAdam",
                   "adafactor": "Adafactor", "sgdnesterov": "SGDNesterov", "sgdnesterov8bit": "SGDNesterov",
                   "adamwschedulefree": "AdamWScheduleFree"}
SAVE_PRECISION_NAMES = {"float": "fp32", "fp32": "fp32", "fp16": "fp16", "bf16": "bf16"}


def _flatten_sections(data: dict) -> dict:
    """sd-scripts reads every [section] of a config file into one namespace; so do we."""
    flat: dict = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(value)
        else:
            flat[key] = value
    return flat


def _resolution(value: Any) -> int:
    """'512,768' or 512 -> the longer side (buckets handle the shape)."""
    parts = [int(float(p)) for p in str(value).replace("x", ",").split(",") if p.strip()]
    return max(parts)


def _network_args(value: Any) -> dict[str, str]:
    items = value if isinstance(value, list) else str(value or "").split()
    return dict(str(item).split("=", 1) for item in items if "=" in str(item))


def _algo_from(module: str, args: dict[str, str]) -> str:
    algo = args.get("algo", "").lower()
    if "lycoris" in module:
        return {"lora": "locon" if "conv_dim" in args else "lora", "locon": "locon", "loha": "loha",
                "lokr": "lokr"}.get(algo, "locon")
    return "locon" if "conv_dim" in args else "lora"


def _special_values(src: dict, flat: dict, applied: list[str], ignored: list[str]) -> set[str]:
    """Options whose value needs translating; returns the foreign keys consumed."""
    used = {"resolution", "max_resolution", "learning_rate", "optimizer_type", "optimizer", "optimizer_args",
            "lr_warmup_steps", "lr_warmup", "lr_scheduler", "cache_latents", "cache_latents_to_disk",
            "network_module", "network_args", "network_train_unet_only", "network_train_text_encoder_only",
            "save_precision", "LoRA_type", "conv_dim", "conv_alpha", "factor", "xformers", "dora_wd"}

    def put(name: str, value: Any) -> None:
        flat[name] = value
        applied.append(name)

    for key in ("resolution", "max_resolution"):
        if src.get(key) not in (None, ""):
            put("dataset.resolution", _resolution(src[key]))
    lr = src.get("learning_rate")
    if lr not in (None, ""):
        put("training.unet_lr", float(lr))
        flat.setdefault("training.text_encoder_lr", float(lr) / 2)
    opt_name = str(src.get("optimizer_type") or src.get("optimizer") or "")
    if opt_name:
        if opt_name.lower() in OPTIMIZER_NAMES:
            put("training.optimizer", OPTIMIZER_NAMES[opt_name.lower()])
        else:
            ignored.append(f"optimizer={opt_name}")
    opt_args = src.get("optimizer_args")
    if opt_args:
        put("training.optimizer_args", " ".join(opt_args) if isinstance(opt_args, list) else str(opt_args))
    _warmup_and_schedule(src, put, ignored)
    _network_values(src, put)
    if "cache_latents" in src or "cache_latents_to_disk" in src:
        put("dataset.cache_latents", "disk" if src.get("cache_latents_to_disk") else
            "memory" if src.get("cache_latents", True) else "off")
    if src.get("save_precision"):
        put("output.save_precision", SAVE_PRECISION_NAMES.get(str(src["save_precision"]).lower(), "fp16"))
    if str(src.get("xformers", "")).lower() in ("sdpa", "none", "xformers"):
        put("training.sdpa", str(src["xformers"]).lower() != "none")
    return used


def _warmup_and_schedule(src: dict, put, ignored: list[str]) -> None:
    if src.get("lr_warmup_steps") not in (None, ""):
        put("training.lr_warmup", float(src["lr_warmup_steps"]))
    elif src.get("lr_warmup") not in (None, ""):      # kohya_ss GUI: percent of the steps
        put("training.lr_warmup", float(src["lr_warmup"]) / 100.0)
    scheduler = str(src.get("lr_scheduler") or "")
    if scheduler:
        from .config import SCHEDULERS
        if scheduler in SCHEDULERS:
            put("training.lr_scheduler", scheduler)
        else:
            ignored.append(f"lr_scheduler={scheduler}")


def _network_values(src: dict, put) -> None:
    args = _network_args(src.get("network_args"))
    lora_type = str(src.get("LoRA_type") or "")
    if lora_type:       # kohya_ss GUI
        low = lora_type.lower()
        algo = "loha" if "loha" in low else "lokr" if "lokr" in low else "locon" if "locon" in low else "lora"
        put("network.algo", algo)
    elif src.get("network_module"):
        put("network.algo", _algo_from(str(src["network_module"]), args))
    for key, name, cast in (("conv_dim", "network.conv_dim", int), ("conv_alpha", "network.conv_alpha", float),
                            ("factor", "network.lokr_factor", int)):
        value = src.get(key, args.get(key))
        if value not in (None, ""):
            put(name, cast(float(value)))
    if src.get("dora_wd") or str(args.get("dora_wd", "")).lower() == "true":
        put("network.dora", True)
    if src.get("network_train_unet_only"):
        put("network.train_text_encoder", False)
    if src.get("network_train_text_encoder_only"):
        put("network.train_unet", False)


def _import(src: dict, name_map: dict[str, str], source: str) -> ImportedConfig:
    flat = options.flatten(TrainConfig())
    applied: list[str] = []
    ignored: list[str] = []
    used = _special_values(src, flat, applied, ignored)
    info = options.field_info(TrainConfig)
    for key, value in src.items():
        if key in used:
            continue
        name = name_map.get(key)
        if name is None or value in ("", None):
            if value not in ("", None, False) and name is None:
                ignored.append(key)
            continue
        try:
            flat[name] = options.coerce_value(value, info[name][0], name)
            applied.append(name)
        except ConfigError:
            ignored.append(f"{key}={value!r}")
    cfg = options.from_dict(TrainConfig, options.unflatten(flat))
    _clamp_to_ranges(cfg, ignored)
    options.validate(cfg)
    return ImportedConfig(cfg, sorted(set(applied)), ignored)


def _clamp_to_ranges(cfg: TrainConfig, ignored: list[str]) -> None:
    """A foreign value outside our range falls back to our default and is listed."""
    defaults = options.flatten(TrainConfig())
    for name, (_typ, meta) in options.field_info(TrainConfig).items():
        section, key = name.split(".")
        value = getattr(getattr(cfg, section), key)
        try:
            options.check_value(name, value, meta)
        except ConfigError:
            setattr(getattr(cfg, section), key, defaults[name])
            ignored.append(f"{name}={value!r} (out of range)")


def import_sd_scripts_toml(data: dict, source: str = "sd-scripts config") -> ImportedConfig:
    return _import(_flatten_sections(data), SD_SCRIPTS_MAP, source)


def import_kohya_json(data: dict, source: str = "kohya_ss preset") -> ImportedConfig:
    if not isinstance(data, dict):
        raise LoraError("The kohya_ss preset is not a JSON object", where=source,
                        fix="Choose the .json saved by kohya_ss's 'Save configuration'")
    return _import(data, {**SD_SCRIPTS_MAP, **KOHYA_GUI_MAP}, source)
