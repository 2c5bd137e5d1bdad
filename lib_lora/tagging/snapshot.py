"""Undo for caption changes: the bytes of every caption file before the last bulk change.

Before a bulk edit (or a tagging run) writes captions, the previous bytes of
each file it will touch are saved in `<root>/.lib_lora/caption_undo.json`
(base64, so UTF-16 files come back byte-identical; null for files that did not
exist). `undo_last` writes them back and deletes the snapshot: one level of undo.
"""
from __future__ import annotations

import base64
import json
import os
import time
from pathlib import Path

from ..errors import DatasetError
from ..fileio import write_bytes, write_text

SNAPSHOT_DIR = ".lib_lora"
SNAPSHOT_FILE = "caption_undo.json"


def snapshot_path(root: str | os.PathLike) -> Path:
    return Path(root) / SNAPSHOT_DIR / SNAPSHOT_FILE


def save_snapshot(root: str | os.PathLike, caption_paths: list[Path], action: str) -> Path:
    root = Path(root)
    files: dict[str, str | None] = {}
    for path in caption_paths:
        rel = os.path.relpath(path, root)
        files[rel] = base64.b64encode(path.read_bytes()).decode("ascii") if path.is_file() else None
    data = {"action": action, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "files": files}
    return write_text(snapshot_path(root), json.dumps(data, ensure_ascii=False, indent=1))


def describe_snapshot(root: str | os.PathLike) -> str | None:
    """'remove tags (12 files, 2024-05-01 10:00:00)' or None when there is nothing to undo."""
    path = snapshot_path(root)
    if not path.is_file():
        return None
    data = json.loads(path.read_text(encoding="utf-8"))
    return f"{data['action']} ({len(data['files'])} files, {data['time']})"


def undo_last(root: str | os.PathLike) -> int:
    """Restore the captions saved by the last snapshot; returns how many files were restored."""
    root = Path(root)
    path = snapshot_path(root)
    if not path.is_file():
        raise DatasetError("There is no caption edit to undo", where=str(root),
                           fix="Undo works once, right after a bulk tag edit or a tagging run in this folder")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        files = data["files"]
    except (ValueError, KeyError):
        raise DatasetError("The undo snapshot is damaged", where=str(path),
                           fix="Delete it; the captions stay as they are now") from None
    for rel, encoded in files.items():
        target = root / rel
        if encoded is None:
            if target.is_file():
                target.unlink()
        else:
            write_bytes(target, base64.b64decode(encoded))
    path.unlink()
    return len(files)
