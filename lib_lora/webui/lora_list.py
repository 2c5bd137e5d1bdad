"""The built-in Lora extension's list of files: refreshed so new epochs can be picked at once.

The extension finds new files on demand (its `list_available_networks`); after training saves an
epoch, a paused run resumes or a grid is drawn, refreshing makes the new files known to the
prompt's `<lora:...>`, the Lora cards and the X/Y/Z axes without the user pressing Refresh.
"""
from __future__ import annotations

import sys


def refresh_lora_list() -> None:
    """Ask the built-in Lora extension (module `networks`, if loaded) to list its files again."""
    networks = sys.modules.get("networks")
    refresh = getattr(networks, "list_available_networks", None)
    if callable(refresh):
        refresh()
