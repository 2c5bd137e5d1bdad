"""Atomic file writes: every file the library writes goes through here.

A file is written to a temporary name in the same folder and renamed over the
target, so a crash, a cancel or a full disk never leaves a half-written LoRA,
caption or config behind (os.replace is atomic on the same filesystem, Windows
included). Paths may hold any Unicode (Cyrillic, CJK, spaces).
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Callable, Iterator


def _default_file_mode() -> int:
    # mkstemp creates files readable only by their owner; a LoRA or caption should get the
    # permissions any other new file would (0666 minus the umask), so other tools can read it.
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `target`; on success rename it over `target`.

    Use for writers that want a path (safetensors.save_file, Image.save)."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if os.name == "posix":
            os.chmod(tmp_path, _FILE_MODE)
        os.replace(tmp_path, target)
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
