"""What the dataset code accepts from the user before it reads or allocates anything.

- A caption extension is one plain suffix that cannot name an image, a model or
  an archive: with `.png` the tagger and prep would write text over every image,
  and an empty one would write captions onto extensionless files.
- Only regular files are read (file_kinds.py): a FIFO named `a.png` would block a read
  forever, a device such as /dev/zero would never end; they are skipped with a finding.
- Every walk over a user's folder, and every plan, is bounded: a `99999999999_x`
  folder or a million epochs is refused with a message before anything is built.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from ..errors import ConfigError, DatasetError
from .images import image_extensions

# More repeats than this is a typo: 100 images x 10000 repeats is a million draws per epoch already.
MAX_REPEATS = 10_000
# Draws (images x repeats) of one epoch, and optimizer steps of a run; far beyond any real LoRA.
MAX_DRAWS_PER_EPOCH = 2_000_000
MAX_TOTAL_STEPS = 50_000_000
# Entries visited in one walk over a dataset or upload folder.
MAX_WALK_ENTRIES = 500_000

_PLAIN_SUFFIX = re.compile(r'^\.[^\s./\\:*?"<>|\x00-\x1f]{1,32}$')
_NOT_CAPTIONS = {".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".onnx", ".zip", ".npz", ".state",
                 ".py", ".exe", ".lnk"}


def normalize_extension(ext: str) -> str:
    """'.txt' for 'txt' or ' .txt '; ConfigError for '', '.', 'a/b', '.png', '.safetensors' and the like."""
    text = (ext or "").strip()
    text = text if text.startswith(".") else "." + text
    allowed = "a plain text extension such as .txt or .caption"
    if not _PLAIN_SUFFIX.match(text):
        raise ConfigError("caption_extension", ext, allowed + " (one dot, no spaces, slashes or wildcards)")
    if text.lower() in image_extensions() or text.lower() in _NOT_CAPTIONS:
        raise ConfigError("caption_extension", ext,
                          allowed + f"; {text} names images or models, and captions would be written over them")
    return text


def check_repeats(repeats: int, folder: Path) -> None:
    if repeats > MAX_REPEATS:
        count = str(repeats) if repeats < 10 ** 12 else "a 13-digit or longer number of"
        raise DatasetError(f"The folder name asks for {count} repeats, more than {MAX_REPEATS}", where=str(folder),
                           fix="Rename it with a sensible repeat count, e.g. 10_<name> (5-20 is usual)")


def count_entry(counter: list[int], where: str | os.PathLike) -> None:
    """Count one entry of a walk; refuse a folder with more than MAX_WALK_ENTRIES files and folders."""
    counter[0] += 1
    if counter[0] > MAX_WALK_ENTRIES:
        raise DatasetError(f"The folder holds more than {MAX_WALK_ENTRIES} files and folders", where=str(where),
                           fix="Point at the dataset folder itself, not a whole drive or home folder")


def check_plan_size(draws_per_epoch: int, epochs: int, batch_size: int, where: str) -> None:
    """Refuse a plan whose epoch or run is absurdly large, before its batches are built."""
    if draws_per_epoch > MAX_DRAWS_PER_EPOCH:
        raise DatasetError(f"One epoch would draw {draws_per_epoch} images (images x repeats), more than "
                           f"{MAX_DRAWS_PER_EPOCH}", where=where,
                           fix="Lower the repeats in the <repeats>_<name> folder names (5-20 is usual)")
    steps = draws_per_epoch * max(epochs, 0) // max(batch_size, 1)
    if steps > MAX_TOTAL_STEPS:
        raise DatasetError(f"The run would take about {steps} steps ({epochs} epochs of {draws_per_epoch} "
                           f"images), more than {MAX_TOTAL_STEPS}", where=where,
                           fix="Use fewer epochs or repeats; a LoRA needs a few thousand steps")


def list_folder(folder: Path) -> list[Path]:
    """The entries of one folder, sorted by name; DatasetError beyond MAX_WALK_ENTRIES (read lazily, so a
    folder of millions is refused without listing it all)."""
    entries = []
    with os.scandir(folder) as it:
        for entry in it:
            entries.append(Path(entry.path))
            if len(entries) > MAX_WALK_ENTRIES:
                raise DatasetError(f"The folder holds more than {MAX_WALK_ENTRIES} files and folders",
                                   where=str(folder),
                                   fix="Point at the dataset folder itself, not a whole drive or home folder")
    return sorted(entries, key=lambda p: p.name)
