"""Stand-in of modules/script_callbacks.py: on_* registration and the *_callback runners."""
from __future__ import annotations

import inspect
import os
from collections import namedtuple

from modules import errors

ScriptCallback = namedtuple("ScriptCallback", ["script", "callback", "name"])

_CATEGORIES = ("app_started", "model_loaded", "ui_tabs", "ui_train_tabs", "ui_settings", "before_image_saved",
               "image_saved", "extra_noise", "cfg_denoiser", "cfg_denoised", "cfg_after_cfg", "before_component",
               "after_component", "image_grid", "infotext_pasted", "script_unloaded", "before_ui",
               "on_reload", "list_optimizers", "list_unets", "before_token_counter")
callback_map = {f"callbacks_{c}": [] for c in _CATEGORIES}


def add_callback(callbacks, fun, *, name=None, category='unknown', filename=None):
    if filename is None:
        stack = [x for x in inspect.stack() if x.filename != __file__]
        filename = stack[0].filename if stack else 'unknown file'
    unique = f"{os.path.basename(filename)}/{category}" + (f"/{name}" if name else "")
    taken = {c.name for c in callbacks}
    candidate, n = unique, 1
    while candidate in taken:
        n += 1
        candidate = f"{unique}-{n}"
    callbacks.append(ScriptCallback(filename, fun, candidate))


def clear_callbacks():
    for callback_list in callback_map.values():
        callback_list.clear()


def _run(category, *args, collect=False):
    results = []
    for c in callback_map[f"callbacks_{category}"]:
        try:
            out = c.callback(*args)
            if collect:
                results += out or []
        except Exception:
            errors.report(f"Error executing callback {c.name} for {category}", exc_info=True)
    return results


def app_started_callback(demo, app):
    _run("app_started", demo, app)


def model_loaded_callback(sd_model):
    _run("model_loaded", sd_model)


def ui_tabs_callback():
    return _run("ui_tabs", collect=True)


def ui_settings_callback():
    _run("ui_settings")


def script_unloaded_callback():
    _run("script_unloaded")


def before_ui_callback():
    _run("before_ui")


def infotext_pasted_callback(infotext, params):
    _run("infotext_pasted", infotext, params)


def _register(category):
    def on(callback, *, name=None):
        add_callback(callback_map[f"callbacks_{category}"], callback, name=name, category=category)
    on.__name__ = f"on_{category}"
    return on


on_app_started = _register("app_started")
on_model_loaded = _register("model_loaded")
on_ui_tabs = _register("ui_tabs")
on_ui_train_tabs = _register("ui_train_tabs")
on_ui_settings = _register("ui_settings")
on_script_unloaded = _register("script_unloaded")
on_before_ui = _register("before_ui")
on_infotext_pasted = _register("infotext_pasted")
on_before_reload = _register("on_reload")
on_image_saved = _register("image_saved")
on_before_image_saved = _register("before_image_saved")
on_list_optimizers = _register("list_optimizers")
