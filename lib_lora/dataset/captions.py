"""Caption augmentation per training step: keep the first tags, drop and shuffle the rest.

`keep_tokens` counts tags, not tokens (domain.md). With `keep_tokens_separator`
set, everything before the separator is kept in place instead. Caption dropout
trains the image with an empty caption; tag dropout drops single tags.
"""
from __future__ import annotations

import random

from .tags import join_tags, split_tags


def _split_kept(caption: str, keep_tokens: int, keep_tokens_separator: str) -> tuple[list[str], list[str]]:
    if keep_tokens_separator and keep_tokens_separator in caption:
        kept, rest = caption.split(keep_tokens_separator, 1)
        return split_tags(kept), split_tags(rest)
    tags = split_tags(caption)
    return tags[:keep_tokens], tags[keep_tokens:]


def process_caption(caption: str, shuffle: bool = False, keep_tokens: int = 0, keep_tokens_separator: str = "",
                    tag_dropout_rate: float = 0.0, caption_dropout_rate: float = 0.0,
                    rng: random.Random | None = None) -> str:
    """The caption text used for one training step.

    Random draws come only from `rng`, in a fixed order, so a seeded run repeats exactly.
    """
    rng = rng or random.Random()
    if caption_dropout_rate > 0 and rng.random() < caption_dropout_rate:
        return ""
    kept, rest = _split_kept(caption, keep_tokens, keep_tokens_separator)
    if tag_dropout_rate > 0:
        rest = [tag for tag in rest if rng.random() >= tag_dropout_rate]
    if shuffle:
        rng.shuffle(rest)
    return join_tags(kept + rest)
