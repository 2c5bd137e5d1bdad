"""The one place that decides whether a path may be written, and where a path may point.

Every file the library writes goes through lib_lora/fileio.py, and fileio asks
`check_write(target)` first. What it checks:

- always: the path holds no NUL, the target is not an existing folder, FIFO,
  socket or device (writing there would hang or destroy something that is not
  ours), and no part of its folder path is a file (said before the work, not
  after it);
- while a `WriteGuard` is active (`with guarded(guard):`, set by each command
  for the duration of its work: prep, tag edits and undo, import, tools,
  training): the target, resolved with every symlink followed, lies inside one
  of the guard's allowed roots, and is neither one of the protected originals
  (dataset images, checkpoint and LoRA inputs) nor inside a protected tree
  (prep's source folder). Both the fully resolved target and the place the
  rename really lands (the resolved parent + the name) are checked, so a
  symlink inside the output folder that leads into the originals is refused.

Public API (stable; the WebUI side uses `confine` and `is_within`):

    resolved(path) -> Path                      absolute, symlinks followed, '..' gone
    is_within(path, root) -> bool               resolved path is root or below it
    confine(path, roots, what) -> Path          the resolved path, or PathNotAllowedError
                                                (outside every root, symlinks included)
    WriteGuard(allowed, protected=(), protected_trees=(), purpose="")
        .check(path) -> Path                    the resolved path, or UnsafeWriteError
        .protect(paths) / .protect_tree(path)   add originals while scanning sources
    guarded(guard)                              context manager: guard every fileio write
    check_write(path) -> Path                   what fileio calls before each write
    remove(path) -> bool                        delete a file the active guards allow
    shown(path) -> str                          a path printable on any console
                                                (undecodable bytes as \\xNN escapes)

Names are compared with os.path.normcase, so Windows paths are matched without
regard to case. Guards live in a context variable: they apply to the thread (or
task) that set them, so two jobs in one WebUI never see each other's guard.
"""
from __future__ import annotations

import contextlib
import contextvars
import errno
import os
import stat
from pathlib import Path
from typing import Iterable, Iterator

from .errors import PathNotAllowedError, UnsafeWriteError, WriteError

PathLike = str | os.PathLike


def shown(path: PathLike) -> str:
    """`path` as text any console can print: bytes that are not UTF-8 (kept by Python as
    surrogates) appear as \\xNN instead of making print() raise."""
    text = os.fspath(path)
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return os.fsencode(text).decode("utf-8", errors="backslashreplace")


def resolved(path: PathLike) -> Path:
    """Absolute, with every existing symlink followed and '..' removed (the file the OS would touch).

    A path holding a NUL character names no file: UnsafeWriteError (a LoraError), not the OS's ValueError."""
    _refuse_nul(path)
    return Path(os.path.realpath(os.path.abspath(os.path.expanduser(os.fspath(path)))))


def _refuse_nul(path: PathLike) -> None:
    if "\x00" in os.fspath(path):
        where = shown(os.fspath(path).replace("\x00", "\\0"))
        raise UnsafeWriteError("The path holds a NUL character", where=where, fix="Remove the NUL (\\0) from it")


def _key(path: Path) -> str:
    return os.path.normcase(str(path))


def _under(path: Path, root: Path) -> bool:
    p, r = _key(path), _key(root)
    if p == r:
        return True
    return p.startswith(r if r.endswith(os.sep) else r + os.sep)


def is_within(path: PathLike, root: PathLike) -> bool:
    """True when `path`, resolved, is `root` (resolved) or lies below it."""
    return _under(resolved(path), resolved(root))


def confine(path: PathLike, roots: Iterable[PathLike], what: str = "path") -> Path:
    """The resolved `path` when it lies inside one of `roots`; else PathNotAllowedError.

    A symlink inside a root that leads outside it is refused: the check is on the resolved path."""
    roots = list(roots)
    try:
        target = resolved(path)
    except UnsafeWriteError as e:
        raise PathNotAllowedError(f"The {what} is not a usable path: {e.what[0].lower()}{e.what[1:]}", where=e.where,
                                  fix=e.fix) from None
    if any(_under(target, resolved(root)) for root in roots):
        return target
    allowed = ", ".join(shown(r) for r in roots) or "(none configured)"
    raise PathNotAllowedError(f"The {what} is outside the folders this server may use", where=shown(path),
                              fix=f"Use a path inside {allowed}, or widen the allowed folders in the settings")


def _landing(path: Path) -> Path:
    """Where a rename onto `path` really lands: the resolved parent folder plus the name itself."""
    absolute = Path(os.path.abspath(os.fspath(path)))
    return resolved(absolute.parent) / absolute.name


def _refuse_special(path: Path) -> None:
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return              # not there yet (the usual case), or unreadable: the write itself reports it
    if stat.S_ISDIR(mode):
        raise UnsafeWriteError("A folder is in the way of a file to write", where=shown(path),
                               fix="Rename or move that folder, or choose another output name")
    if not stat.S_ISREG(mode):
        raise UnsafeWriteError("The file to write is a FIFO, socket or device, not a regular file",
                               where=shown(path), fix="Remove it or choose another output name")


class WriteGuard:
    """Which paths a command may write: inside `allowed`, never a protected original.

    `protected` are files (sources: images, captions being read, checkpoints); `protected_trees`
    are folders none of whose files may be written (prep's source folder)."""

    def __init__(self, allowed: Iterable[PathLike], protected: Iterable[PathLike] = (),
                 protected_trees: Iterable[PathLike] = (), purpose: str = "this command"):
        self.allowed = [resolved(p) for p in allowed]
        self.protected: set[str] = set()
        self.protected_trees: list[Path] = []
        self.purpose = purpose
        self.protect(protected)
        for tree in protected_trees:
            self.protect_tree(tree)

    def protect(self, paths: Iterable[PathLike]) -> None:
        for path in paths:
            self.protected.add(_key(resolved(path)))

    def protect_tree(self, path: PathLike) -> None:
        self.protected_trees.append(resolved(path))

    def allows(self, path: PathLike) -> bool:
        try:
            self.check(path)
            return True
        except UnsafeWriteError:
            return False

    def check(self, path: PathLike) -> Path:
        """The resolved target, or UnsafeWriteError saying why it may not be written."""
        path = Path(os.path.expanduser(os.fspath(path)))
        for place in {resolved(path), _landing(path)}:
            self._check_place(path, place)
        return resolved(path)

    def _check_place(self, given: Path, place: Path) -> None:
        if _key(place) in self.protected or any(_under(place, tree) for tree in self.protected_trees):
            raise UnsafeWriteError(f"Refused to write over an original file ({self.purpose})", where=shown(given),
                                   fix="Choose an output folder apart from the sources; the originals are "
                                       "never written")
        if not any(_under(place, root) for root in self.allowed):
            roots = ", ".join(shown(r) for r in self.allowed)
            raise UnsafeWriteError(f"Refused to write outside the output folder ({self.purpose}): the path "
                                   f"leads to {shown(place)}", where=shown(given),
                                   fix=f"Write only inside {roots}; remove symbolic links or '..' that lead out")


_ACTIVE: contextvars.ContextVar[tuple[WriteGuard, ...]] = contextvars.ContextVar("lib_lora_write_guards",
                                                                                 default=())


@contextlib.contextmanager
def guarded(guard: WriteGuard) -> Iterator[WriteGuard]:
    """Every fileio write (and `remove`) inside this block must pass `guard` (and any outer guard)."""
    token = _ACTIVE.set(_ACTIVE.get() + (guard,))
    try:
        yield guard
    finally:
        _ACTIVE.reset(token)


def _refuse_file_in_path(path: Path) -> None:
    """A file where a folder of the path should be: said before any work, not after it."""
    for parent in Path(os.path.abspath(path)).parents:
        if os.path.isdir(parent):
            return
        if os.path.lexists(parent):
            raise WriteError("Cannot write the file: a part of its folder path is a file, not a folder",
                             where=shown(parent), fix="Choose an output folder whose parts are folders",
                             errno=errno.ENOTDIR)


def check_write(path: PathLike) -> Path:
    """Called by fileio before every write: refuses special files, a file standing where a folder of the path
    should be, and whatever an active guard forbids."""
    _refuse_nul(path)                  # the OS would refuse it with a bare ValueError
    path = Path(path)
    for guard in _ACTIVE.get():
        guard.check(path)
    _refuse_special(path)
    _refuse_file_in_path(path)
    return path


def remove(path: PathLike) -> bool:
    """Delete one regular file the active guard allows to be written; False when there is none
    (missing, or a folder or special file, which is left alone)."""
    path = Path(path)
    for guard in _ACTIVE.get():
        guard.check(path)
    if not os.path.lexists(path) or (not os.path.islink(path) and not stat.S_ISREG(os.lstat(path).st_mode)):
        return False
    os.unlink(path)
    return True
