"""The WebUI's path policy: which folders the tab and the HTTP API may name inside the WebUI.

A WebUI that listens beyond localhost (--listen, --share, --ngrok, --server-name: the same test
the WebUI makes before it disables extension installs, cmd_opts.webui_is_non_local) is confined
to its data, models, Lora and checkpoint folders plus the setting "train_lora_allowed_roots";
the HTTP API is confined always. The rule itself is lib_lora/path_policy.py.
"""
from __future__ import annotations

import os
from typing import Any

from lib_lora.path_policy import SETTING, PathPolicy, split_roots

NON_LOCAL_FLAGS = ("share", "listen", "ngrok", "server_name")

def non_local_flags(cmd_opts: Any) -> list[str]:
    """The command-line flags that make the WebUI reachable from other machines."""
    return [f"--{name.replace('_', '-')}" for name in NON_LOCAL_FLAGS if getattr(cmd_opts, name, None)]


def default_roots(cmd_opts: Any, paths_internal: Any) -> list[str]:
    data = getattr(cmd_opts, "data_dir", None) or paths_internal.data_path
    models = getattr(cmd_opts, "models_dir", None) or getattr(paths_internal, "models_path", None) \
        or os.path.join(data, "models")
    candidates = [paths_internal.data_path, data, models, getattr(cmd_opts, "lora_dir", None),
                  getattr(cmd_opts, "ckpt_dir", None)]
    return list(dict.fromkeys(str(c) for c in candidates if c))


def webui_policy(for_api: bool = False) -> PathPolicy:
    """The policy of the running WebUI: confined when it listens beyond localhost (always for the API)."""
    from modules import paths_internal, shared
    cmd_opts = shared.cmd_opts
    roots = default_roots(cmd_opts, paths_internal) + split_roots(getattr(shared.opts, SETTING, "") or "")
    flags = non_local_flags(cmd_opts)
    if flags:
        return PathPolicy(tuple(dict.fromkeys(roots)), True,
                          f"the WebUI listens beyond localhost ({' '.join(flags)})")
    return PathPolicy(tuple(dict.fromkeys(roots)), for_api, "the HTTP API may only use these folders")


