"""One training run per output folder and name, whoever starts it (CLI, tab or HTTP API).

A run holds an OS lock on `<out>/.<name>.lock` for as long as it writes there
(fcntl.flock on POSIX, msvcrt.locking on Windows). The OS drops the lock when
the process ends, crash or kill included, so a dead run never leaves it stuck;
the file itself may stay and is simply locked again by the next run. While
held, the file says who holds it (pid, host, start time), and a second run is
refused with that in the message. The locks are per open file, so two runs in
one process (the tab and the API in the same WebUI) exclude each other too.

A finished run empties the file but leaves it (hidden, 0 bytes) on purpose: removing
it is not safe. The lock belongs to the open file, not to the name: a second run
that opened the path before the first one deleted it would take the lock on the
deleted file while a third creates a new file under the name and locks that, and
two runs would then write the same outputs. Avoiding that needs every locker to
re-check, after locking, that the name still leads to its file (older installs or
a CLI of another version do not), and on Windows a file another process has open
cannot be deleted at all. One empty file per output name is the price of a lock
that can never be held twice.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from pathlib import Path
from typing import Iterator

from ..errors import RunLockedError
from ..fileio import write_error
from ..safe_paths import check_write, shown

# Windows locks byte ranges, and a locked range cannot be read by others: lock one byte far past
# the holder's note so the note stays readable.
_LOCK_OFFSET = 1 << 20


def lock_path(out_dir: str | os.PathLike, name: str) -> Path:
    return Path(out_dir) / f".{name}.lock"


def _try_lock(fd: int) -> bool:
    if os.name == "nt":
        import msvcrt
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            return False
        return True
    import fcntl
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _unlock(fd: int) -> None:
    if os.name == "nt":
        import msvcrt
        os.lseek(fd, _LOCK_OFFSET, os.SEEK_SET)
        with contextlib.suppress(OSError):
            msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
    else:
        import fcntl
        fcntl.flock(fd, fcntl.LOCK_UN)


def _holder(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            note = json.loads(f.read(4096).rstrip(b"\0 \n") or b"{}")
        return f"pid {note['pid']} on {note['host']}, started {note['started']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a run that is starting"


def _write_note(fd: int) -> None:
    note = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    data = json.dumps(note).encode("utf-8") + b"\n"
    os.lseek(fd, 0, os.SEEK_SET)
    os.ftruncate(fd, 0)
    os.write(fd, data)


@contextlib.contextmanager
def output_lock(out_dir: str | os.PathLike, name: str, enabled: bool = True) -> Iterator[Path | None]:
    """Hold the lock of (out_dir, name) for the block; RunLockedError when another run holds it.

    `enabled=False` (ranks other than the main one of a data-parallel run) takes no lock."""
    if not enabled:
        yield None
        return
    path = check_write(lock_path(out_dir, name))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(e, path) from None
    try:
        if not _try_lock(fd):
            raise RunLockedError(f"Another training run is writing '{name}' in this folder ({_holder(path)})",
                                 where=shown(out_dir),
                                 fix="Wait for it to finish or stop it, or choose another output name or folder")
        try:
            _write_note(fd)
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)       # a finished run leaves an empty, unlocked file
            _unlock(fd)
    finally:
        os.close(fd)
