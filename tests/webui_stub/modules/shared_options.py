"""Stand-in of modules/shared_options.py: the built-in settings Train LoRA reads or changes."""
from __future__ import annotations

from modules.options import OptionInfo, options_section

restricted_opts = {"outdir_samples", "outdir_grids", "outdir_txt2img_samples"}

options_templates: dict[str, OptionInfo] = {}
options_templates.update(options_section(('sd', "Stable Diffusion", "sd"), {
    "sd_model_checkpoint": OptionInfo(None, "Stable Diffusion checkpoint"),
    "sd_checkpoints_limit": OptionInfo(1, "Maximum number of checkpoints loaded at the same time"),
    "CLIP_stop_at_last_layers": OptionInfo(1, "Clip skip", infotext="Clip skip"),
    "sdxl_clip_l_skip": OptionInfo(False, "Clip skip SDXL"),
    "emphasis": OptionInfo("Original", "Emphasis mode"),
    "comma_padding_backtrack": OptionInfo(20, "Prompt word wrap length limit"),
    "fp8_storage": OptionInfo("Disable", "FP8 weight"),
    "sdxl_crop_top": OptionInfo(0, "crop top coordinate"),
    "sdxl_crop_left": OptionInfo(0, "crop left coordinate"),
}))
options_templates.update(options_section(('optimizations', "Optimizations", "sd"), {
    "cross_attention_optimization": OptionInfo("Automatic", "Cross attention optimization"),
}))
options_templates.update(options_section(('training', "Training", "training"), {
    "unload_models_when_training": OptionInfo(False, "Move VAE and CLIP to RAM when training if possible"),
    "pin_memory": OptionInfo(False, "Turn on pin_memory for DataLoader"),
    "save_training_settings_to_txt": OptionInfo(True, "Save textual inversion and hypernet settings"),
    "training_xattention_optimizations": OptionInfo(False, "Use cross attention optimizations while training"),
}))
options_templates.update(options_section(('ui', "User interface", "ui"), {
    "live_previews_enable": OptionInfo(True, "Show live previews of the created image"),
    "show_progress_every_n_steps": OptionInfo(10, "Live preview display period"),
    "memmon_poll_rate": OptionInfo(0, "VRAM usage polls per second during generation"),
    "hidden_tabs": OptionInfo([], "Hidden UI tabs"),
    "ui_tab_order": OptionInfo([], "UI tab order"),
}))
options_templates.update(options_section(('extra_networks', "Extra Networks", "sd"), {
    "lora_functional": OptionInfo(False, "Lora/Networks: use old method"),
    "lora_in_memory_limit": OptionInfo(0, "Number of Lora networks to keep cached in memory"),
    "sd_lora": OptionInfo("None", "Add network to prompt"),
}))
