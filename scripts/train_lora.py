"""WebUI entry point of Train LoRA: registers the tab, settings, HTTP API and X/Y/Z axes.

Thin on purpose: every piece of logic lives in lib_lora. The WebUI puts the extension root
on sys.path only while it loads this file, so the lib_lora package is imported here, at load
time (it is light: no torch, gradio or WebUI imports); its submodules are then found through
the package when a callback runs. The WebUI's modules and the heavy parts are imported inside
functions.
"""
from __future__ import annotations

import lib_lora  # noqa: F401  (must happen while the extension root is on sys.path)


def _ui_tabs():
    from lib_lora.webui.backend import on_ui_tabs
    return on_ui_tabs()


def _ui_settings():
    from lib_lora.webui.settings import on_ui_settings
    on_ui_settings()


def _read_row_dora():
    """The built-in Lora misreads per-output-row DoRA (ours, LyCORIS' default); see dora_reader."""
    from lib_lora.webui.dora_reader import install
    install()


def _app_started(demo, app):
    from lib_lora.webui.api import register
    register(app)
    _read_row_dora()     # also with --nowebui, where no UI is built


def _before_ui():
    _read_row_dora()     # every extension's scripts are loaded by now, the built-in Lora's too
    try:
        from lib_lora.webui.xyz_axes import add_axes
    except ImportError:     # the X/Y/Z axes module is optional
        return
    add_axes()


def _script_unloaded():
    """The WebUI reloads its scripts: every job of this process stops (a run keeps its saved epochs)."""
    from lib_lora.webui.host import webui_jobs
    for job in webui_jobs().list():
        job.cancel()       # the job itself: one forgotten meanwhile must not keep the rest running


def _register() -> str:
    """Register the callbacks; returns the extension root (scripts.basedir() is only right
    while the WebUI is importing this file)."""
    from modules import script_callbacks, scripts
    script_callbacks.on_ui_tabs(_ui_tabs)
    script_callbacks.on_ui_settings(_ui_settings)
    script_callbacks.on_app_started(_app_started)
    script_callbacks.on_before_ui(_before_ui)
    script_callbacks.on_script_unloaded(_script_unloaded)
    return scripts.basedir()


EXTENSION_DIR = _register()
