"""Stand-in of modules/shared_cmd_options.py: the parsed command line (an argparse Namespace)."""
from __future__ import annotations

import argparse
import os

from modules import paths_internal


def _defaults() -> argparse.Namespace:
    models = paths_internal.models_path
    return argparse.Namespace(
        data_dir=paths_internal.data_path, models_dir=None, ckpt_dir=None,
        lora_dir=os.path.join(models, "Lora"), lyco_dir_backcompat=os.path.join(models, "LyCORIS"),
        embeddings_dir=os.path.join(paths_internal.data_path, "embeddings"),
        hypernetwork_dir=os.path.join(models, "hypernetworks"),
        lowvram=False, medvram=False, medvram_sdxl=False, lowram=False, no_half=True, no_half_vae=True,
        precision="full", upcast_sampling=False, xformers=False, use_cpu=["all"], device_id=None,
        skip_install=False, api=True, listen=False, nowebui=False, hide_ui_dir_config=False,
        freeze_settings=False, freeze_settings_in_sections=None, freeze_specific_settings=None,
        enable_insecure_extension_access=False, disable_extension_access=False, webui_is_non_local=False,
        ui_settings_file=os.path.join(paths_internal.data_path, "config.json"), disable_safe_unpickle=False,
    )


cmd_opts = _defaults()
