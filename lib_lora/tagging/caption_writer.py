"""Writing tagger output next to each image, by write mode.

skip: leave images that already have a non-empty caption; append: existing
tags, then new ones not already there; prepend: new tags, then existing ones;
overwrite: new tags only. The trigger word is put first in every mode.
"""
from __future__ import annotations

from pathlib import Path

from ..dataset.input_limits import normalize_extension
from ..dataset.tags import dedupe_tags, join_tags, split_tags
from ..dataset.textfiles import read_caption_file
from ..fileio import write_text
from ..safe_paths import WriteGuard, guarded
from .postprocess import put_trigger_first


def caption_path_for(image: Path, caption_extension: str) -> Path:
    """The caption beside `image`; ConfigError for an extension that is empty or names an image or model."""
    return Path(image).with_suffix(normalize_extension(caption_extension))


def write_caption(image: Path, text: str, caption_extension: str) -> Path:
    """Write the caption of `image`: only beside it, never over it or any other image (the guard), atomically."""
    image = Path(image)
    target = caption_path_for(image, caption_extension)
    with guarded(WriteGuard([image.parent], protected=[image], purpose="caption")):
        return write_text(target, text)


def existing_tags(caption_file: Path) -> list[str]:
    return split_tags(read_caption_file(caption_file)[0]) if caption_file.is_file() else []


def merge_for_mode(old: list[str], new: list[str], mode: str, trigger: str) -> list[str] | None:
    """The tags to write, or None when the mode says to leave the file alone."""
    if mode == "skip" and old:
        return None
    if mode == "append":
        tags = old + new
    elif mode == "prepend":
        tags = new + old
    else:
        tags = new
    return put_trigger_first(dedupe_tags(tags), trigger)


def write_tags(image: Path, new: list[str], mode: str, caption_extension: str, trigger: str = "") -> bool:
    """Write the caption for `image`; True if the file was written."""
    target = caption_path_for(image, caption_extension)
    if target.exists() and not target.is_file():
        return False            # a folder, FIFO or device named like the caption is left alone
    tags = merge_for_mode(existing_tags(target), new, mode, trigger)
    if tags is None:
        return False
    write_caption(image, join_tags(tags), caption_extension)
    return True
