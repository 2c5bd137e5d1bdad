"""Extracting an uploaded zip without trusting it.

Refused: entry names that are absolute, hold '..' or a drive letter, symbolic
links, encrypted entries, more entries than the count limit, and more bytes
than the size limit, counted while reading (a zip's declared sizes can lie).
Only the entries `wanted(name)` accepts are written; the rest are listed as
skipped. Every file lands inside `dest` through an atomic write. A damaged
entry (bad CRC, sizes that lie, a truncated stream) or a name the file system
cannot hold (over 255 bytes) skips that entry with the reason; nothing of it
is left behind.
"""
from __future__ import annotations

import errno
import os
import stat
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import DatasetError, UnsafeWriteError, WriteError
from ..fileio import write_with
from .file_kinds import is_regular_file

CHUNK = 1 << 20
NAME_MAX = 250      # bytes; the file systems' limit is 255, and the atomic write needs room for its temp name
# Write errors caused by the entry's own name (too long, clashing with a folder, invalid on this OS).
_ENTRY_ERRNOS = {errno.ENAMETOOLONG, errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EINVAL, errno.EILSEQ}
_DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


@dataclass(frozen=True)
class ExtractLimits:
    max_files: int = 20_000
    max_total_bytes: int = 4 << 30      # 4 GiB uncompressed
    max_file_bytes: int = 256 << 20     # no training image is this large
    max_ratio: int = 250                # compression ratio beyond which an entry is a zip bomb


@dataclass
class ExtractResult:
    written: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (entry name, reason)


def safe_member_path(name: str) -> PurePosixPath | None:
    """The entry's relative path, or None when it could escape the destination."""
    name = name.replace("\\", "/")
    path = PurePosixPath(name)
    if not name or name.startswith("/") or path.is_absolute() or ":" in path.parts[0]:
        return None
    if any(part in ("..", "") for part in path.parts):
        return None
    return path


def _is_link(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_entry(info: zipfile.ZipInfo, limits: ExtractLimits) -> str:
    if _is_link(info):
        return "symbolic link (not extracted)"
    if info.flag_bits & 0x1:
        return "encrypted (not supported)"
    if safe_member_path(info.filename) is None:
        return "unsafe path (absolute or with '..'; not extracted)"
    if any(len(os.fsencode(part)) > NAME_MAX for part in safe_member_path(info.filename).parts):
        return f"a name longer than {NAME_MAX} bytes, which file systems cannot hold"
    if info.file_size > limits.max_file_bytes:
        return f"larger than {limits.max_file_bytes >> 20} MiB"
    if info.compress_size and info.file_size / info.compress_size > limits.max_ratio and info.file_size > CHUNK:
        return "compression ratio of a zip bomb"
    return ""


def _copy_limited(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: list[int],
                  limits: ExtractLimits) -> None:
    def writer(tmp: Path) -> None:
        written = 0
        with zf.open(info) as src, open(tmp, "wb") as out:
            while chunk := src.read(CHUNK):
                written += len(chunk)
                budget[0] -= len(chunk)
                if written > limits.max_file_bytes or budget[0] < 0:
                    raise DatasetError("The zip unpacks to more data than allowed", where=info.filename,
                                       fix=f"Upload at most {limits.max_total_bytes >> 20} MiB of images, "
                                           "or copy the folder to the server and give its path")
                out.write(chunk)
    write_with(target, writer)


def _declared_entries(zip_path: Path) -> int:
    """The entry count in the zip's end record (-1 when absent or a zip64 placeholder), read before
    zipfile builds an object per entry: a zip of millions of entries is refused without that cost."""
    size = zip_path.stat().st_size
    with open(zip_path, "rb") as f:
        f.seek(max(0, size - (1 << 16) - 22))
        tail = f.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        return -1
    entries = int.from_bytes(tail[at + 10:at + 12], "little")
    return -1 if entries == 0xFFFF else entries


def _open_zip(zip_path: Path, limits: ExtractLimits) -> zipfile.ZipFile:
    if not is_regular_file(zip_path):
        raise DatasetError("The zip is not a regular file (a folder, FIFO or device)", where=str(zip_path),
                           fix="Upload the zip file itself")
    declared = _declared_entries(zip_path)
    if declared > limits.max_files:
        raise DatasetError(f"The zip holds {declared} files, more than {limits.max_files}", where=str(zip_path),
                           fix="Split it into smaller zips")
    try:
        return zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise DatasetError(f"Not a readable zip file ({e})", where=str(zip_path),
                           fix="Re-create the zip, or upload the images themselves") from None


def _extract_entry(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: list[int],
                   limits: ExtractLimits) -> str:
    """Write one entry; '' when written, else why it was skipped (the zip's damage, not the disk's)."""
    try:
        _copy_limited(zf, info, target, budget, limits)
    except _DAMAGED as e:
        return f"damaged in the zip ({e}); re-create the zip"
    except UnsafeWriteError as e:
        return e.what
    except WriteError as e:
        if e.errno not in _ENTRY_ERRNOS:     # disk full, read-only: stop, it concerns every entry
            raise
        return f"cannot be written under this name ({e.what})"
    return ""


def extract_zip(zip_path: Path, dest: Path, wanted: Callable[[PurePosixPath], bool],
                limits: ExtractLimits = ExtractLimits()) -> ExtractResult:
    zf = _open_zip(zip_path, limits)
    result = ExtractResult()
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        if len(infos) > limits.max_files:
            raise DatasetError(f"The zip holds {len(infos)} files, more than {limits.max_files}",
                               where=str(zip_path), fix="Split it into smaller zips")
        budget = [limits.max_total_bytes]
        for info in infos:
            reason = _check_entry(info, limits)
            rel = safe_member_path(info.filename)
            if not reason and not wanted(rel):
                reason = "not an image or caption"
            target = dest.joinpath(*rel.parts) if rel is not None else dest
            reason = reason or _extract_entry(zf, info, target, budget, limits)
            if reason:
                result.skipped.append((info.filename, reason))
                continue
            result.written.append(target)
    return result
