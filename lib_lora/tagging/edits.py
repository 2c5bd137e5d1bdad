"""Bulk tag edits over every caption of a folder, with one level of undo.

Each edit is a pure function from one caption's tag list to the new list; the
folder-wide driver applies it to every caption, writes only the files that
change, and saves their previous bytes first (snapshot.py) so `undo` restores
them. Tags match by `tag_key`, so 'long_hair' and 'Long Hair' are the same tag.
"""
from __future__ import annotations

import fnmatch
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..dataset.files import find_images
from ..dataset.file_kinds import is_regular_file
from ..dataset.tags import dedupe_tags, join_tags, split_tags, tag_key
from ..errors import DatasetError
from ..safe_paths import WriteGuard, guarded
from .caption_writer import caption_path_for, existing_tags, write_caption
from .postprocess import put_trigger_first
from .snapshot import save_snapshot

TagEdit = Callable[[list[str]], list[str]]


def remove_tags(targets: list[str]) -> TagEdit:
    keys = {tag_key(t) for t in targets}
    return lambda tags: [t for t in tags if tag_key(t) not in keys]


def replace_tag(old: str, new: str) -> TagEdit:
    """Replace `old` by `new` (new may hold several comma-separated tags, or be empty to delete)."""
    old_key, new_tags = tag_key(old), split_tags(new)
    return lambda tags: dedupe_tags([n for t in tags for n in (new_tags if tag_key(t) == old_key else [t])])


def merge_tags(parts: list[str], phrase: str) -> TagEdit:
    """Where a caption has all of `parts`, put `phrase` at the first one's place and drop the rest."""
    keys = {tag_key(p) for p in parts}

    def edit(tags: list[str]) -> list[str]:
        if not keys <= {tag_key(t) for t in tags}:
            return tags
        out, placed = [], False
        for t in tags:
            if tag_key(t) in keys:
                if not placed:
                    out.append(phrase.strip())
                    placed = True
            else:
                out.append(t)
        return dedupe_tags(out)
    return edit


def move_to_front(targets: list[str]) -> TagEdit:
    """The listed tags that a caption has go first, in the listed order (keep_tokens keeps them there)."""
    order = [tag_key(t) for t in targets]

    def edit(tags: list[str]) -> list[str]:
        by_key = {tag_key(t): t for t in tags}
        front = [by_key[k] for k in order if k in by_key]
        return front + [t for t in tags if tag_key(t) not in set(order)]
    return edit


def add_trigger(trigger: str) -> TagEdit:
    return lambda tags: put_trigger_first(tags, trigger)


def prune_tags(patterns: list[str], counts: Counter | None = None, min_count: int = 0) -> TagEdit:
    """Drop tags matching any pattern (shell wildcards: '*ears*'), and tags used in fewer than
    `min_count` captions of the folder (`counts` from tag_counts)."""
    keys = [tag_key(p) for p in patterns]

    def edit(tags: list[str]) -> list[str]:
        out = []
        for t in tags:
            key = tag_key(t)
            rare = counts is not None and counts[key] < min_count
            if not rare and not any(fnmatch.fnmatchcase(key, k) for k in keys):
                out.append(t)
        return out
    return edit


@dataclass
class EditResult:
    changed: int
    total: int
    action: str


def _images(root: Path) -> list[Path]:
    if not root.is_dir():
        raise DatasetError("The folder for tag edits does not exist", where=str(root),
                           fix="Give the dataset folder (or one concept folder) whose captions to edit")
    return find_images(root)


def _caption_files(root: Path, caption_extension: str) -> list[Path]:
    return [caption_path_for(img, caption_extension) for img in _images(root)]


def tag_counts(root: str | os.PathLike, caption_extension: str = ".txt") -> Counter:
    """{tag_key: number of captions holding it} over the folder."""
    counts: Counter = Counter()
    for path in _caption_files(Path(root), caption_extension):
        counts.update({tag_key(t) for t in existing_tags(path)})
    return counts


def apply_bulk_edit(root: str | os.PathLike, edit: TagEdit, action: str,
                    caption_extension: str = ".txt") -> EditResult:
    """Apply `edit` to every caption under root; snapshot, then write the changed ones."""
    root = Path(root)
    images = _images(root)
    images_of = {caption_path_for(img, caption_extension): img for img in images}
    files = list(images_of)
    changes: dict[Path, list[str]] = {}
    for path in files:
        if os.path.lexists(path) and not is_regular_file(path):
            continue            # a FIFO or device named like a caption is neither read nor replaced
        old = existing_tags(path)
        new = edit(list(old))
        if new != old:
            changes[path] = new
    if changes:
        save_snapshot(root, list(changes), action)
        with guarded(WriteGuard([root], protected=images, purpose="tag edit")):
            for path, tags in changes.items():
                write_caption(images_of[path], join_tags(tags), caption_extension)
    return EditResult(len(changes), len(files), action)


def edit_caption(image: str | os.PathLike, text: str, caption_extension: str = ".txt") -> Path:
    """Per-image edit from the gallery: tidy the tag list and write it (beside the image, never over one)."""
    image = Path(image)
    if not image.is_file():
        raise DatasetError("The image of this caption does not exist", where=str(image),
                           fix="Reload the gallery; the image may have been moved or deleted")
    return write_caption(image, join_tags(split_tags(text)), caption_extension)
