"""Stand-in of the WebUI's top-level launch.py (re-exporting launch_utils) for install.py tests.

`run_pip` and `run` RECORD the commands in `pip_commands` / `run_commands` instead of running
them; `installed` is the set of distributions `is_installed` reports (tests fill it)."""
from __future__ import annotations

import importlib.metadata
import importlib.util
import sys

python = sys.executable
skip_install = False
index_url = ""
pip_commands: list[str] = []
run_commands: list[str] = []
installed: set[str] | None = None      # None: ask the real environment


def is_installed(package):
    if installed is not None:
        return package.lower() in {p.lower() for p in installed}
    try:
        return importlib.metadata.distribution(package) is not None
    except importlib.metadata.PackageNotFoundError:
        try:
            return importlib.util.find_spec(package) is not None
        except ModuleNotFoundError:
            return False


def run_pip(command, desc=None, live=False):
    if skip_install:
        return None
    index_url_line = f' --index-url {index_url}' if index_url != '' else ''
    line = f'"{python}" -m pip {command} --prefer-binary{index_url_line}'
    pip_commands.append(line)
    print(f"stub launch.run_pip: {line}")   # visible when install.py runs in a subprocess
    return ""


def run(command, desc=None, errdesc=None, custom_env=None, live=False):
    run_commands.append(command)
    return ""


def repo_dir(name):
    return name
