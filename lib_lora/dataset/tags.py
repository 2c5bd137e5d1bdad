"""Captions as tag lists: splitting, joining and the booru junk-tag list.

A caption is comma-separated tags ("1girl, solo, smile"). Tagging, the dataset
report, the bulk edits and the best-epoch tag recall all split with `split_tags`
and compare by `tag_key`, the only tag normaliser, so a tag counts as one whatever
its case, underscores or repeated spaces.
"""
from __future__ import annotations

# Booru metadata tags that describe the upload, not the picture (domain.md).
JUNK_TAGS = frozenset({
    "absurdres", "highres", "lowres", "incredibly absurdres", "huge filesize", "commentary request",
    "commentary", "english commentary", "chinese commentary", "korean commentary", "japanese commentary",
    "symbol-only commentary", "partial commentary", "translated", "translation request",
    "check translation", "artist name", "artist request", "commission", "patreon username",
    "twitter username", "pixiv id", "web address", "watermark", "signature", "dated", "bad id",
    "bad pixiv id", "bad twitter id", "jpeg artifacts", "md5 mismatch", "third-party edit",
    "character request", "copyright request", "source request", "tagme", "non-web source",
    "paid reward available", "variant set", "revision",
})
# Costume-name tags get very long ("character (outfit name) (series)"): a sign of junk.
LONG_TAG_CHARS = 40


def split_tags(caption: str) -> list[str]:
    """'a, b,,  c ' -> ['a', 'b', 'c']."""
    return [tag.strip() for tag in caption.split(",") if tag.strip()]


def join_tags(tags: list[str]) -> str:
    return ", ".join(tags)


def tag_key(tag: str) -> str:
    """Comparison key: case, underscores and repeated spaces do not matter."""
    return " ".join(tag.replace("_", " ").lower().split())


def is_junk_tag(tag: str) -> bool:
    return tag_key(tag) in JUNK_TAGS


def dedupe_tags(tags: list[str]) -> list[str]:
    """Drop repeats (by tag_key), keeping the first occurrence and the order."""
    seen: set[str] = set()
    out = []
    for tag in tags:
        key = tag_key(tag)
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out
