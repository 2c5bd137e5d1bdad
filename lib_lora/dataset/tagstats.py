"""Tag statistics over captions: frequency and the strongest co-occurrences.

Tags that nearly always appear together become one association in the LoRA
(sword -> weapon, rain -> umbrella). We rank pairs by Jaccard overlap
(both / either) and leave out tags present in almost every caption (the
trigger, '1girl'), which co-occur with everything and say nothing.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from itertools import combinations

from .tags import split_tags, tag_key

UBIQUITOUS_SHARE = 0.9
MIN_PAIR_COUNT = 3


@dataclass
class TagPair:
    a: str
    b: str
    together: int
    a_count: int
    b_count: int

    @property
    def jaccard(self) -> float:
        return self.together / (self.a_count + self.b_count - self.together)

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "together": self.together, "a_count": self.a_count,
                "b_count": self.b_count, "p_b_given_a": round(self.together / self.a_count, 3),
                "p_a_given_b": round(self.together / self.b_count, 3), "jaccard": round(self.jaccard, 3)}


def caption_tag_sets(captions: list[str]) -> list[set[str]]:
    return [{tag_key(t) for t in split_tags(c)} for c in captions]


def tag_frequency(tag_sets: list[set[str]]) -> Counter:
    counts: Counter = Counter()
    for tags in tag_sets:
        counts.update(tags)
    return counts


def strongest_pairs(tag_sets: list[set[str]], top: int = 10, min_together: int = MIN_PAIR_COUNT) -> list[TagPair]:
    counts = tag_frequency(tag_sets)
    n = max(1, len(tag_sets))
    useful = {t for t, c in counts.items() if c >= min_together and c / n < UBIQUITOUS_SHARE}
    pairs: Counter = Counter()
    for tags in tag_sets:
        pairs.update(combinations(sorted(tags & useful), 2))
    ranked = [TagPair(a, b, together, counts[a], counts[b]) for (a, b), together in pairs.items()
              if together >= min_together]
    ranked.sort(key=lambda p: (-p.jaccard, -p.together, p.a, p.b))
    return ranked[:top]
