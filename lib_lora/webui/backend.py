"""The tab's backend inside the WebUI: its data and Lora folders, its queue, its txt2img for grids."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from lib_lora.ui.backend import TabBackend
from lib_lora.ui.tab import TAB_ID, TAB_TITLE, build_tab


def webui_backend() -> TabBackend:
    from modules import paths_internal, shared   # the WebUI; this module is only imported inside it

    from lib_lora.webui.grid import render_webui_grid
    from lib_lora.webui.host import webui_jobs
    from lib_lora.webui.interrogators import captioner_names, make_captioner
    from lib_lora.webui.path_policy import webui_policy
    from lib_lora.webui.upscalers import upscale_hook, upscaler_names
    from lib_lora.webui.train_host import WebUITrainHost
    data_dir = Path(paths_internal.data_path) / "train_lora"
    models = Path(getattr(paths_internal, "models_path", Path(paths_internal.data_path) / "models"))

    return TabBackend(data_dir, Path(shared.cmd_opts.lora_dir), models / "wd14_tagger", WebUITrainHost(),
                      render_webui_grid, policy_source=webui_policy,
                      paste_to_txt2img=register_txt2img_paste, captioners=captioner_names,
                      make_captioner=make_captioner, upscalers=upscaler_names, upscale_hook=upscale_hook,
                      jobs=webui_jobs, host="webui")


def on_ui_tabs():
    """The WebUI's on_ui_tabs callback: the tab, on the WebUI's backend."""
    return [(build_tab(webui_backend()), TAB_TITLE, TAB_ID)]


def register_txt2img_paste(button: Any, infotext: Any) -> bool:
    """Let `button` paste `infotext` into txt2img like the WebUI's "Send to txt2img" (False outside it)."""
    try:
        from modules import infotext_utils as paste
    except ImportError:
        try:
            from modules import generation_parameters_copypaste as paste    # before v1.8
        except ImportError:
            return False
    binding = getattr(paste, "ParamBinding", None)
    if binding is None:
        return False
    paste.register_paste_params_button(binding(paste_button=button, tabname="txt2img",
                                               source_text_component=infotext))
    return True
