"""Listing the image files of a folder tree (for tagging, prep and bulk edits, which
work on any folder, not only on <repeats>_<name> layouts)."""
from __future__ import annotations

import os
from pathlib import Path

from .images import image_extensions

_SKIPPED_DIRS = {"__MACOSX", "@eaDir", ".ipynb_checkpoints"}


def find_images(root: str | os.PathLike) -> list[Path]:
    """Every image under root (recursive), hidden and OS folders skipped, sorted for a stable order."""
    exts = image_extensions()
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and d not in _SKIPPED_DIRS)
        found += [Path(dirpath) / f for f in sorted(filenames)
                  if Path(f).suffix.lower() in exts and not f.startswith(".")]
    return found
