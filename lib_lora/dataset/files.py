"""Listing the image files of a folder tree (for tagging, prep and bulk edits, which
work on any folder, not only on <repeats>_<name> layouts).

Only regular files are listed: a FIFO, socket or device named like an image is
left out (reading it could block or never end) and reported in `skipped`. Linked
folders are not entered, and the walk is bounded (input_limits.MAX_WALK_ENTRIES).
"""
from __future__ import annotations

import os
from pathlib import Path

from .file_kinds import special_file_reason
from .images import image_extensions
from .input_limits import count_entry

_SKIPPED_DIRS = {"__MACOSX", "@eaDir", ".ipynb_checkpoints"}


def find_images(root: str | os.PathLike, skipped: list[tuple[Path, str]] | None = None) -> list[Path]:
    """Every image under root (recursive), hidden and OS folders skipped, sorted for a stable order.

    Image-named entries that are not regular files are appended to `skipped` as (path, reason)."""
    exts = image_extensions()
    found = []
    walked = [0]
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS)
        for name in sorted(filenames):
            count_entry(walked, root)
            if Path(name).suffix.lower() not in exts or name.startswith("."):
                continue
            path = Path(dirpath) / name
            reason = special_file_reason(path)
            if reason:
                if skipped is not None:
                    skipped.append((path, reason))
                continue
            found.append(path)
    return found
