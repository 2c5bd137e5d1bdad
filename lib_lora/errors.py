"""The errors a user sees. Each says what was wrong, where, and what to do.

Everything the library raises on bad input derives from `LoraError`, so the WebUI
tab and the CLI can catch one type and show `str(err)` as plain words, never a
traceback. Imports nothing from the rest of the package.
"""
from __future__ import annotations


class LoraError(Exception):
    """A problem the user can fix. `what` is the problem, `where` the file, field
    or folder, `fix` the action to take."""

    def __init__(self, what: str, where: str = "", fix: str = ""):
        self.what, self.where, self.fix = what, where, fix
        super().__init__(self.message)

    @property
    def message(self) -> str:
        text = self.what
        if self.where:
            text += f" ({self.where})"
        if self.fix:
            text += f". {self.fix}"
        return text


class ConfigError(LoraError):
    """An option has a bad value: names the field, the value and the allowed range."""

    def __init__(self, field: str, value: object, allowed: str):
        self.field, self.value, self.allowed = field, value, allowed
        super().__init__(
            f"Option {field} = {value!r} is not allowed",
            where=field,
            fix=f"Use {allowed}",
        )

    @property
    def message(self) -> str:
        return f"Option {self.field} = {self.value!r} is not allowed; use {self.allowed}"


class DatasetError(LoraError):
    """The dataset folder cannot be used as given."""


class ModelError(LoraError):
    """The base model is missing, unreadable, or of a kind we cannot train on."""


class NetworkFileError(LoraError):
    """A LoRA/LyCORIS file cannot be read or does not fit the model."""


class TaggerError(LoraError):
    """The tagger model cannot be found, downloaded or run."""


class OfflineError(LoraError):
    """Something had to be downloaded but there is no network."""


class UnsafeWriteError(LoraError):
    """A write was refused: it would land on an original, outside the output folder, or on a special file."""


class PathNotAllowedError(LoraError):
    """A path names a place outside the folders this server may use (the WebUI listening beyond localhost)."""


class WriteError(LoraError, OSError):
    """A file could not be written (disk full, read-only, a file where a folder should be, name too long).

    Also an OSError, so code that already handles OSError keeps working; `errno` is the OS's code."""

    def __init__(self, what: str, where: str = "", fix: str = "", errno: int | None = None):
        super().__init__(what, where, fix)
        self.errno = errno


class RunLockedError(LoraError):
    """Another training run is writing to the same output folder and name."""
