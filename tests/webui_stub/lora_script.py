"""Stand-in of the built-in Lora extension's scripts/lora_script.py, the part that shapes the model's
runtime: importing it patches torch.nn layers class-wide (lora_patches.LoraPatches, kept as
`networks.originals`), names the model's layers on every model load, and undoes the patches when
scripts are unloaded. The WebUI loads built-in extensions' scripts before any other extension."""
from __future__ import annotations

import lora_patches
import networks
from modules import script_callbacks


def unload():
    networks.originals.undo()


script_callbacks.on_script_unloaded(unload)
networks.originals = lora_patches.LoraPatches()
script_callbacks.on_model_loaded(networks.assign_network_names_to_compvis_modules)
