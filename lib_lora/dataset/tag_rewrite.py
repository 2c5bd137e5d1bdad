"""The caption fix that goes with flattening transparency (domain.md): the
picture now has a white background, so 'transparent background' becomes
'white background, simple background'."""
from __future__ import annotations

from .tags import dedupe_tags, join_tags, split_tags, tag_key

TRANSPARENT = "transparent background"
WHITE = ["white background", "simple background"]


def rewrite_transparent_background(caption: str) -> str:
    tags = split_tags(caption)
    if TRANSPARENT not in {tag_key(t) for t in tags}:
        return caption
    out = []
    for tag in tags:
        out += WHITE if tag_key(tag) == TRANSPARENT else [tag]
    return join_tags(dedupe_tags(out))
