"""Stand-in of modules/shared_cmd_options.py: the parsed command line (an argparse Namespace).

Defaults are the WebUI's (modules/cmd_args.py): no --api, --api-auth, --listen, --share,
--server-name; tests set the flags they need on `cmd_opts`."""
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
        skip_install=False, api=False, api_auth=None, api_log=False, nowebui=False, listen=False, share=False,
        ngrok=None, server_name=None, port=None, hide_ui_dir_config=False,
        freeze_settings=False, freeze_settings_in_sections=None, freeze_specific_settings=None,
        enable_insecure_extension_access=False,
        ui_settings_file=os.path.join(paths_internal.data_path, "config.json"), disable_safe_unpickle=False,
    )


cmd_opts = _defaults()
# computed from the flags after parsing, as the WebUI does: reachable from other machines
cmd_opts.webui_is_non_local = any([cmd_opts.share, cmd_opts.listen, cmd_opts.ngrok, cmd_opts.server_name])
cmd_opts.disable_extension_access = cmd_opts.webui_is_non_local and not cmd_opts.enable_insecure_extension_access
