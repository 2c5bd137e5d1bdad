"""Atomic file writes: every file the library writes goes through here.

A file is written to a temporary name in the same folder and renamed over the
target, so a crash, a cancel or a full disk never leaves a half-written LoRA,
caption or config behind (os.replace is atomic on the same filesystem, Windows
included). Paths may hold any Unicode (Cyrillic, CJK, spaces).

Before anything is created, safe_paths.check_write decides whether the target
may be written (the active WriteGuard of the command, special files). An OS
error on the way (disk full, read-only folder, a file where a folder should be,
a name too long) becomes a WriteError: one sentence with the path and what to do.
The temporary name is kept within the 255-byte limit of file names, so any name
the file system accepts can be written.
"""
from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator

from .errors import WriteError
from .safe_paths import check_write, shown


def _default_file_mode() -> int:
    # mkstemp creates files readable only by their owner; a LoRA or caption should get the
    # permissions any other new file would (0666 minus the umask), so other tools can read it.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


# Most file systems cap a name at 255 bytes; the temp name adds '.', '.', 8 random chars and '.tmp'.
_NAME_MAX = 255
_TEMP_EXTRA = 14


def _temp_prefix(name: str) -> str:
    """'.<name>.' with the name cut (whole characters) so the temp name fits in 255 bytes."""
    budget = _NAME_MAX - _TEMP_EXTRA
    name = name[:budget]
    while len(os.fsencode(name)) > budget:
        name = name[:-1]
    return f".{name}."


_REASONS = {
    errno.ENOSPC: ("The disk is full", "Free some space on that drive or choose an output folder on another one"),
    errno.EROFS: ("The folder is on a read-only drive", "Choose an output folder you can write to"),
    errno.EACCES: ("Permission denied", "Choose an output folder you can write to, or change its permissions"),
    errno.EPERM: ("Permission denied", "Choose an output folder you can write to, or change its permissions"),
    errno.ENOTDIR: ("A part of the path is a file, not a folder", "Choose an output folder whose parts are folders"),
    errno.EEXIST: ("A file is in the way of a folder to create", "Rename that file or choose another output folder"),
    errno.ENAMETOOLONG: ("The file name is too long for the file system", "Choose a shorter output name"),
    errno.EISDIR: ("A folder is in the way of a file to write", "Rename that folder or choose another output name"),
}
if hasattr(errno, "EDQUOT"):
    _REASONS[errno.EDQUOT] = ("The disk quota is used up", "Free some space or choose another output folder")


def write_error(err: OSError, target: Path) -> WriteError:
    """One sentence for an OS error met while writing `target`."""
    what, fix = _REASONS.get(err.errno or 0, (f"The file cannot be written ({err.strerror or err})",
                                               "Check the output folder and the free space"))
    return WriteError(f"Cannot write the file: {what[0].lower()}{what[1:]}", where=shown(target), fix=fix,
                      errno=err.errno)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    Use for writers that want a path (safetensors.save_file, Image.save)."""
    target = check_write(target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(target.name), suffix=".tmp", dir=target.parent)
        os.close(fd)
    except WriteError:
        raise
    except OSError as e:
        raise write_error(e, target) from None
    tmp_path = Path(tmp)
    try:
        try:
            yield tmp_path
            if os.name == "posix":
                os.chmod(tmp_path, _FILE_MODE)
            os.replace(tmp_path, target)
        except WriteError:
            raise
        except OSError as e:
            if e.errno in _REASONS:
                raise write_error(e, target) from None
            raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(target: str | os.PathLike, data: bytes) -> Path:
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
    return Path(target)


def write_text(target: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    # newline="" keeps "\n" as written: captions and configs stay byte-identical across OSes.
    with atomic_path(target) as tmp:
        with open(tmp, "w", encoding=encoding, newline="") as f:
            f.write(text)
    return Path(target)


def write_with(target: str | os.PathLike, writer: Callable[[Path], None]) -> Path:
    """Call `writer(tmp_path)` and move the result over `target` atomically."""
    with atomic_path(target) as tmp:
        writer(tmp)
    return Path(target)
