"""Reading caption files whatever their encoding.

Captions come from many tools: Notepad on Windows writes UTF-8 with a BOM or
UTF-16, taggers write UTF-8. We detect the encoding from the BOM, then try
UTF-8, then UTF-16 without a BOM (many NUL bytes), and fall back to cp1252 so a
caption is never lost; the encoding used is returned so the report can say so.
"""
from __future__ import annotations

import codecs
import os
import stat
from pathlib import Path

from ..errors import DatasetError

# A caption is a line of tags; a file a thousand times longer is not a caption (and must not fill memory).
MAX_CAPTION_BYTES = 1 << 20

_BOMS = (
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(data: bytes) -> tuple[str, str]:
    """Bytes to (text, encoding name)."""
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            return data.decode(encoding, errors="replace"), encoding
    # Real text never holds NUL bytes; UTF-16 without a BOM is full of them (and may even be valid UTF-8).
    if len(data) >= 2 and data.count(0) >= len(data) // 4:
        encoding = _utf16_byte_order(data)
        return data.decode(encoding, errors="replace"), encoding
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    return data.decode("cp1252", errors="replace"), "cp1252"


def _utf16_byte_order(data: bytes) -> str:
    """Latin, Cyrillic and punctuation have tiny high bytes: whichever offsets hold them are the high ones."""
    small_at_odd = sum(1 for b in data[1::2] if b < 0x06)
    small_at_even = sum(1 for b in data[0::2] if b < 0x06)
    return "utf-16-le" if small_at_odd >= small_at_even else "utf-16-be"


def read_caption_file(path: str | os.PathLike) -> tuple[str, str]:
    """(caption, encoding). Lines are joined with ', ' (some tools write one tag per line).

    DatasetError for a file that is not a regular file (a FIFO would block) or is larger than 1 MiB."""
    text, encoding = decode_text(read_caption_bytes(path))
    text = text.replace("\x00", "")
    lines = [line.strip() for line in text.splitlines()]
    return ", ".join(line for line in lines if line), encoding


def read_caption_bytes(path: str | os.PathLike) -> bytes:
    """The bytes of a caption file, refusing FIFOs, devices and files too large to be a caption."""
    with open(path, "rb", opener=_open_nonblocking) as f:
        info = os.fstat(f.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise DatasetError("The caption is not a regular file (a FIFO, socket or device)", where=str(path),
                               fix="Remove it and write the caption as a plain text file")
        data = f.read(MAX_CAPTION_BYTES + 1)
    if len(data) > MAX_CAPTION_BYTES:
        raise DatasetError(f"The caption file is larger than {MAX_CAPTION_BYTES >> 20} MiB", where=str(path),
                           fix="A caption is a line of tags; remove or replace this file")
    return data


def _open_nonblocking(path: str, flags: int) -> int:
    # Opening a FIFO for reading blocks until a writer appears; O_NONBLOCK makes it return at once.
    return os.open(path, flags | getattr(os, "O_NONBLOCK", 0))
