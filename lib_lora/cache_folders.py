"""Where lib_lora keeps what it derives once and reuses: model configs, tokenizer files.

A cache lives in the extension's own `.cache/` folder (beside the code, so removing
the extension removes it), else — on a read-only install — in the system temp
folder; an environment variable per cache overrides both.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from .errors import LoraError

REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_folder(name: str, env_var: str) -> Path:
    """A writable folder for the cache `name`: $env_var, else .cache/<name>, else <temp>/lib_lora_<name>."""
    configured = os.environ.get(env_var)
    candidates = [Path(configured)] if configured else [REPO_ROOT / ".cache" / name,
                                                        Path(tempfile.gettempdir()) / f"lib_lora_{name}"]
    for folder in candidates:
        try:
            folder.mkdir(parents=True, exist_ok=True)
            if os.access(folder, os.W_OK):
                return folder
        except OSError:
            continue
    raise LoraError(f"No writable folder for the {name} cache", where=str(candidates[-1]),
                    fix=f"Set {env_var} to a folder you can write to")
