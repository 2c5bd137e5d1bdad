"""Train LoRA's entries in the WebUI's Settings page (section "Train LoRA").

The allowed folders widen what a remote user may name, so that setting cannot be changed over
/sdapi/v1/options (restrict_api), and while the WebUI runs with --hide-ui-dir-config it is hidden and
cannot be set at all (shared.hide_dirs and restricted_opts, as the WebUI's own output-folder settings).
"""
from __future__ import annotations

SECTION = ("train_lora", "Train LoRA")


def on_ui_settings() -> None:
    from modules import shared
    options = {
        "train_lora_allowed_roots": shared.OptionInfo(
            "", "Extra folders Train LoRA may use (comma-separated): datasets, tool inputs and outputs named in "
                "the tab when the WebUI listens beyond localhost, and in the HTTP API always",
            component_args=getattr(shared, "hide_dirs", None), restrict_api=True),
        "train_lora_check_vram": shared.OptionInfo(True, "Check free VRAM before a training run starts"),
        "train_lora_pause_minutes": shared.OptionInfo(
            30, "Minutes a paused training run keeps its state in memory; after that it lets go of it and "
                "Resume continues from the state saved at the pause"),
    }
    for key, info in options.items():
        info.section = SECTION
        shared.opts.add_option(key, info)
    restricted = getattr(shared.opts, "restricted_opts", None)
    if isinstance(restricted, set):
        restricted.add("train_lora_allowed_roots")
