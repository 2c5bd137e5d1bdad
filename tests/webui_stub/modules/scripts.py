"""Stand-in of modules/scripts.py: Script, basedir() and load_scripts() for one extension folder."""
from __future__ import annotations

import inspect
import os
import sys
from collections import namedtuple

from modules import errors, paths, script_callbacks, script_loading

AlwaysVisible = object()
ScriptFile = namedtuple("ScriptFile", ["basedir", "filename", "path"])
ScriptClassData = namedtuple("ScriptClassData", ["script_class", "path", "basedir", "module"])
scripts_data: list[ScriptClassData] = []
current_basedir = paths.script_path


class Script:
    name = None
    section = None
    filename = None
    args_from = None
    args_to = None
    alwayson = False
    is_txt2img = False
    is_img2img = False
    tabname = None
    group = None
    create_group = True
    infotext_fields = None
    paste_field_names = None
    api_info = None
    setup_for_ui_only = False
    controls = None

    def title(self):
        raise NotImplementedError()

    def ui(self, is_img2img):
        pass

    def show(self, is_img2img):
        return True

    def run(self, p, *args):
        pass

    def process(self, p, *args):
        pass

    def postprocess(self, p, processed, *args):
        pass

    def describe(self):
        return ""

    def elem_id(self, item_id):
        return f"script_{self.title().lower().replace(' ', '_')}_{item_id}"


def basedir():
    """The extension root while its scripts file is being imported, the WebUI root afterwards."""
    return current_basedir


def load_scripts_from(extension_root: str) -> list:
    """What load_scripts() does for one extension: each scripts/*.py imported with the extension
    root prepended to sys.path only while it loads; Script subclasses registered."""
    global current_basedir
    script_callbacks.clear_callbacks()
    modules = []
    scripts_dir = os.path.join(extension_root, "scripts")
    for filename in sorted(os.listdir(scripts_dir)):
        if not filename.endswith(".py"):
            continue
        path = os.path.join(scripts_dir, filename)
        syspath = sys.path
        try:
            sys.path = [extension_root] + sys.path
            current_basedir = extension_root
            module = script_loading.load_module(path)
            modules.append(module)
            for _, obj in inspect.getmembers(module, inspect.isclass):
                if issubclass(obj, Script) and obj is not Script:
                    scripts_data.append(ScriptClassData(obj, path, extension_root, module))
        except Exception:
            errors.report(f"Error loading script: {filename}", exc_info=True)
        finally:
            sys.path = syspath
            current_basedir = paths.script_path
    return modules
