"""From tag probabilities to a caption: thresholds, union of models, filters and order.

A tag is kept when its probability is >= its category's threshold (kohya and
toriato compare with >=). Several models are combined as a union, keeping each
tag's highest probability. Character tags come first, then general tags, each
by confidence; the trigger word goes before everything. Underscores become
spaces except in kaomoji such as `^_^`, where the underscore is the mouth.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..dataset.tags import dedupe_tags, is_junk_tag, tag_key
from .labels import CHARACTER, RATING, TagLabels

KAOMOJI = frozenset({"0_0", "(o)_(o)", "+_+", "+_-", "._.", "<o>_<o>", "<|>_<|>", "=_=", ">_<", "3_3", "6_9",
                     ">_o", "@_@", "^_^", "o_o", "u_u", "x_x", "|_|", "||_||"})


@dataclass(frozen=True)
class TagFilter:
    general_threshold: float = 0.35
    character_threshold: float = 0.85
    exclude_tags: tuple[str, ...] = ()
    remove_junk_tags: bool = True
    replace_underscores: bool = True
    trigger_word: str = ""


def scores_above_threshold(probs: np.ndarray, labels: TagLabels, flt: TagFilter) -> dict[str, tuple[float, int]]:
    """{raw tag name: (probability, category)} for one image's probabilities (ratings never).

    Categories other than character (general, and artist/copyright/meta in newer CSVs) use the general threshold.
    """
    out: dict[str, tuple[float, int]] = {}
    for i, (name, category) in enumerate(zip(labels.names, labels.categories)):
        if category == RATING:
            continue
        threshold = flt.character_threshold if category == CHARACTER else flt.general_threshold
        # Compare in float32 like the reference scripts' array comparisons: 0.35 must pass a 0.35 threshold.
        if np.float32(probs[i]) >= np.float32(threshold):
            out[name] = (float(probs[i]), category)
    return out


def union_scores(per_model: list[dict[str, tuple[float, int]]]) -> dict[str, tuple[float, int]]:
    merged: dict[str, tuple[float, int]] = {}
    for scores in per_model:
        for name, (prob, category) in scores.items():
            if name not in merged or prob > merged[name][0]:
                merged[name] = (prob, category)
    return merged


def pretty_tag(name: str, replace_underscores: bool = True) -> str:
    if not replace_underscores or name in KAOMOJI:
        return name
    return name.replace("_", " ")


def caption_tags(scores: dict[str, tuple[float, int]], flt: TagFilter) -> list[str]:
    """Ordered, filtered tags for one image (trigger first)."""
    ranked = sorted(scores.items(), key=lambda kv: (kv[1][1] != CHARACTER, -kv[1][0], kv[0]))
    return filter_tags([name for name, _score in ranked], flt)


def filter_tags(tags: list[str], flt: TagFilter) -> list[str]:
    """Tags already in order (any captioner's) -> exclusions and junk dropped, underscores, trigger first."""
    excluded = {tag_key(t) for t in flt.exclude_tags}
    kept = [pretty_tag(name, flt.replace_underscores) for name in tags
            if tag_key(name) not in excluded and not (flt.remove_junk_tags and is_junk_tag(name))]
    return put_trigger_first(kept, flt.trigger_word)


def put_trigger_first(tags: list[str], trigger: str) -> list[str]:
    trigger = trigger.strip()
    if not trigger:
        return dedupe_tags(tags)
    return dedupe_tags([trigger] + [t for t in tags if tag_key(t) != tag_key(trigger)])
