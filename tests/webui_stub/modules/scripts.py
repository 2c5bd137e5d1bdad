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
# The WebUI's own script.js, javascript/ and style.css: in the stand-in they live beside modules/
# (paths.script_path is a temp data folder). Extension roots are added as load_scripts_from loads them.
webui_files_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
extension_roots: list[str] = []


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
    if extension_root not in extension_roots:
        extension_roots.append(extension_root)
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


def list_scripts(scriptdirname, extension, *, include_extensions=True):
    """ScriptFile for each `<root>/<scriptdirname>/*<extension>`: the WebUI's own first, then each
    loaded extension's, files sorted by name within a root (the WebUI's load order)."""
    roots = [webui_files_dir] + (extension_roots if include_extensions else [])
    found = []
    for root in roots:
        folder = os.path.join(root, scriptdirname)
        if os.path.isdir(folder):
            found += [ScriptFile(root, name, os.path.join(folder, name)) for name in sorted(os.listdir(folder))
                      if os.path.splitext(name)[1].lower() == extension]
    return found


def list_files_with_name(filename):
    """`filename` in the WebUI root and in each loaded extension root, where it exists."""
    return [os.path.join(root, filename) for root in [webui_files_dir] + extension_roots
            if os.path.isfile(os.path.join(root, filename))]
