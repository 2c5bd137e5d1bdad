"""scripts/train_lora.py loads the way the WebUI loads extension scripts and builds the tab."""
from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_loads_like_the_webui_and_registers_the_tab(webui):
    path_before = list(sys.path)
    modules = webui.scripts.load_scripts_from(ROOT)
    assert sys.path == path_before                           # extension root only while loading
    assert [m.__name__ for m in modules] == ["train_lora.py"]  # named by basename, as the WebUI does
    assert modules[0].EXTENSION_DIR == ROOT
    tabs = webui.script_callbacks.ui_tabs_callback()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert (title, elem_id) == ("Train LoRA", "train_lora")
    import gradio as gr
    assert isinstance(blocks, gr.Blocks)


def test_settings_and_api_register(webui):
    webui.scripts.load_scripts_from(ROOT)
    webui.script_callbacks.ui_settings_callback()
    assert webui.shared.opts.train_lora_check_vram is True
    from fastapi import FastAPI
    app = FastAPI()
    webui.script_callbacks.app_started_callback(None, app)      # no --api: no routes, as the WebUI's own API
    assert not any(getattr(r, "path", "").startswith("/train_lora/") for r in app.routes)
    webui.shared.cmd_opts.api = True
    try:
        app = FastAPI()
        webui.script_callbacks.app_started_callback(None, app)
    finally:
        webui.shared.cmd_opts.api = False
    assert any(getattr(r, "path", "") == "/train_lora/v1/runs" for r in app.routes)
    webui.script_callbacks.before_ui_callback()
    webui.script_callbacks.script_unloaded_callback()
