"""Which files may be read: regular files only (after following links).

A FIFO named `a.png` would block a read forever and a device such as /dev/zero would
never end, so the dataset, import, tagging and prep code skip anything that is not a
regular file, with the reason as a finding. Below images.py and input_limits.py,
which both ask it.
"""
from __future__ import annotations

import os
import stat


def is_regular_file(path: str | os.PathLike) -> bool:
    """True for a regular file (after following links); False for folders, FIFOs, sockets, devices, dangling links."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except (OSError, ValueError):
        return False


def special_file_reason(path: str | os.PathLike) -> str:
    """Why a file that is not regular is skipped, or '' when it is a regular file (or a folder)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError) as e:
        return f"cannot be read ({getattr(e, 'strerror', None) or e})"
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return ""
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe), not a file: skipped, since reading it could wait forever"
    if stat.S_ISSOCK(mode):
        return "a socket, not a file: skipped"
    return "a device or other special file, not a regular file: skipped"
