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
options_templates.update(options_section(('upscaling', "Upscaling", "postprocessing"), {
    "ESRGAN_tile": OptionInfo(192, "Tile size for ESRGAN upscalers."),
    "ESRGAN_tile_overlap": OptionInfo(8, "Tile overlap for ESRGAN upscalers."),
}))
options_templates.update(options_section(('interrogate', "Interrogate"), {
    "interrogate_keep_models_in_memory": OptionInfo(False, "Keep models in VRAM"),
    "interrogate_return_ranks": OptionInfo(False, "Include ranks of model tags matches in results."),
    "interrogate_clip_num_beams": OptionInfo(1, "BLIP: num_beams"),
    "interrogate_clip_min_length": OptionInfo(24, "BLIP: minimum description length"),
    "interrogate_clip_max_length": OptionInfo(48, "BLIP: maximum description length"),
    "interrogate_clip_dict_limit": OptionInfo(1500, "CLIP: maximum number of lines in text file"),
    "interrogate_clip_skip_categories": OptionInfo([], "CLIP: skip inquire categories"),
    "interrogate_deepbooru_score_threshold": OptionInfo(0.5, "deepbooru: score threshold"),
    "deepbooru_sort_alpha": OptionInfo(True, "deepbooru: sort tags alphabetically"),
    "deepbooru_use_spaces": OptionInfo(True, "deepbooru: use spaces in tags"),
    "deepbooru_escape": OptionInfo(True, "deepbooru: escape (\\) brackets"),
    "deepbooru_filter_tags": OptionInfo("", "deepbooru: filter out those tags"),
}))
