"""Train LoRA's entries in the WebUI's Settings page (section "Train LoRA")."""
from __future__ import annotations

SECTION = ("train_lora", "Train LoRA")


def on_ui_settings() -> None:
    from modules import shared
    options = {
        "train_lora_allowed_roots": shared.OptionInfo(
            "", "Extra folders the Train LoRA HTTP API may read datasets from (comma-separated)"),
        "train_lora_check_vram": shared.OptionInfo(True, "Check free VRAM before a training run starts"),
    }
    for key, info in options.items():
        info.section = SECTION
        shared.opts.add_option(key, info)
