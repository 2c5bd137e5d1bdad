"""Undo for caption changes: the bytes of every caption file before the last bulk change.

Before a bulk edit (or a tagging run) writes captions, the previous bytes of
each file it will touch are saved in `<root>/.lib_lora/caption_undo.json`
(base64, so UTF-16 files come back byte-identical; null for files that did not
exist). `undo_last` writes them back and deletes the snapshot: one level of undo.

The snapshot is a file in the user's folder, so undo trusts nothing in it: every
entry must be a relative path that stays inside the folder (no '..', no absolute
or drive paths, no symlink leading out) and names a caption, not an image or a
model. The whole snapshot is checked before the first file is touched; a bad one
is refused as damaged and nothing changes.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import time
from pathlib import Path, PurePosixPath, PureWindowsPath

from ..dataset.input_limits import normalize_extension
from ..dataset.textfiles import MAX_CAPTION_BYTES, read_caption_bytes
from ..errors import ConfigError, DatasetError
from ..fileio import write_bytes, write_text
from ..safe_paths import WriteGuard, guarded, is_within, remove

SNAPSHOT_DIR = ".lib_lora"
SNAPSHOT_FILE = "caption_undo.json"
# Base64 of a few thousand captions of at most MAX_CAPTION_BYTES each is far below this.
MAX_SNAPSHOT_BYTES = 256 << 20
MAX_SNAPSHOT_FILES = 200_000


def snapshot_path(root: str | os.PathLike) -> Path:
    return Path(root) / SNAPSHOT_DIR / SNAPSHOT_FILE


def save_snapshot(root: str | os.PathLike, caption_paths: list[Path], action: str) -> Path:
    root = Path(root)
    files: dict[str, str | None] = {}
    for path in caption_paths:
        if not is_within(path.parent, root):
            raise DatasetError("A caption to change lies outside the folder being edited", where=str(path),
                               fix="Edit the folder that holds the images")
        rel = Path(os.path.relpath(path, root)).as_posix()
        files[rel] = base64.b64encode(read_caption_bytes(path)).decode("ascii") if path.is_file() else None
    data = {"action": action, "time": time.strftime("%Y-%m-%d %H:%M:%S"), "files": files}
    # ensure_ascii: names that are not valid UTF-8 (kept as surrogates) survive as \udcxx escapes
    with guarded(WriteGuard([root], purpose="undo snapshot")):
        return write_text(snapshot_path(root), json.dumps(data, ensure_ascii=True, indent=1))


def _load(path: Path) -> dict:
    damaged = DatasetError("The undo snapshot is damaged", where=str(path),
                           fix="Delete it; the captions stay as they are now")
    try:
        if path.stat().st_size > MAX_SNAPSHOT_BYTES:
            raise damaged
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise damaged from None
    if not isinstance(data, dict) or not isinstance(data.get("files"), dict) or len(data["files"]) > MAX_SNAPSHOT_FILES:
        raise damaged
    return data


def describe_snapshot(root: str | os.PathLike) -> str | None:
    """'remove tags (12 files, 2024-05-01 10:00:00)' or None when there is nothing to undo."""
    path = snapshot_path(root)
    if not path.is_file():
        return None
    try:
        data = _load(path)
    except (DatasetError, OSError):
        return "a damaged undo snapshot (undo says how to clear it)"
    return f"{data.get('action', '?')} ({len(data['files'])} files, {data.get('time', '?')})"


def _entry_target(root: Path, rel: object, encoded: object, where: Path) -> tuple[Path, bytes | None]:
    """The file an entry restores and its bytes; DatasetError when the entry could touch anything else."""
    def refuse(why: str) -> DatasetError:
        return DatasetError(f"The undo snapshot names a file it may not restore ({why}): {rel!r}", where=str(where),
                            fix="Delete the snapshot; the captions stay as they are now")
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise refuse("not a file name")
    posix, windows = PurePosixPath(rel.replace("\\", "/")), PureWindowsPath(rel)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or ".." in posix.parts:
        raise refuse("it leaves the folder")
    if posix.parts and posix.parts[0] == SNAPSHOT_DIR:
        raise refuse("it is the snapshot's own folder")
    try:
        normalize_extension(posix.suffix)
    except ConfigError:
        raise refuse("not a caption file") from None
    target = root.joinpath(*posix.parts)
    if not is_within(target, root):
        raise refuse("a symbolic link leads out of the folder")
    if encoded is None:
        return target, None
    try:
        data = base64.b64decode(encoded, validate=True) if isinstance(encoded, str) else None
    except (binascii.Error, ValueError):
        data = None
    if data is None or len(data) > MAX_CAPTION_BYTES:
        raise refuse("its saved text is damaged")
    return target, data


def undo_last(root: str | os.PathLike) -> int:
    """Restore the captions saved by the last snapshot; returns how many files were restored."""
    root = Path(root)
    path = snapshot_path(root)
    if not path.is_file():
        raise DatasetError("There is no caption edit to undo", where=str(root),
                           fix="Undo works once, right after a bulk tag edit or a tagging run in this folder")
    files = _load(path)["files"]
    restores = [_entry_target(root, rel, encoded, path) for rel, encoded in files.items()]  # all checked first
    with guarded(WriteGuard([root], purpose="undo")):
        for target, data in restores:
            if data is None:
                remove(target)
            else:
                write_bytes(target, data)
        remove(path)
    return len(files)
