"""A single-file checkpoint (.safetensors / .ckpt, ldm/sgm layout) as a diffusers pipeline, offline.

diffusers converts the weights (`from_single_file`); the architecture comes from
a LOCAL diffusers config folder: the user's `model.config_dir` for a custom
model, else the shipped config of the detected family (models/checkpoint_layout.py,
models/model_configs.py). `local_files_only=True` and a folder path as config
keep diffusers off the network: it never looks up a hub repository.
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ModelError
from .checkpoint_layout import FAMILY_NAMES, detect_layout, read_family
from .model_configs import materialise_config


def config_folder_for(path: Path, config_dir: str | Path | None, v_parameterization: bool) -> tuple[Path, str]:
    """(diffusers config folder, family) for the checkpoint `path`; reads its header only."""
    if not config_dir:
        layout = detect_layout(path, v_parameterization)
        return materialise_config(layout.config_name), layout.family
    folder = Path(config_dir)
    if not (folder / "model_index.json").is_file():
        raise ModelError("model.config_dir is not a diffusers config folder (no model_index.json)",
                         where=str(folder), fix="Point it at a diffusers model folder of the same architecture, "
                                                "or leave it empty for SD1.x, SD2.x and SDXL base checkpoints")
    family = read_family(path)
    folder_is_xl = (folder / "text_encoder_2").is_dir()
    if folder_is_xl != (family == "sdxl"):
        raise ModelError(f"The checkpoint is {FAMILY_NAMES[family]} but model.config_dir describes "
                         f"{'an SDXL' if folder_is_xl else 'a non-SDXL'} model", where=str(folder),
                         fix="Use a config folder of the checkpoint's own architecture, or leave it empty")
    return folder, family


def load_single_file_pipeline(path: str | Path, config_dir: str | Path | None = None,
                              v_parameterization: bool = False):
    """StableDiffusion(XL)Pipeline from one checkpoint file, converted with a local config."""
    from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline

    path = Path(path)
    folder, family = config_folder_for(path, config_dir, v_parameterization)
    cls = StableDiffusionXLPipeline if family == "sdxl" else StableDiffusionPipeline
    extra = {} if family == "sdxl" else {"safety_checker": None, "requires_safety_checker": False}
    try:
        return cls.from_single_file(str(path), config=str(folder), local_files_only=True, **extra)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        # diffusers says "size mismatch ..." or names a missing key when the config does not fit the weights
        raise ModelError(f"The checkpoint cannot be converted with the config in {folder}: "
                         f"{str(e).splitlines()[0][:300]}", where=str(path),
                         fix="Check that the file is complete; for a custom architecture set model.config_dir "
                             "to a diffusers folder that matches it") from None
