"""Balance and training length: images x repeats per concept, suggested repeats,
total steps against the targets users follow (shared/domain.md).

The steps themselves are counted by epoch_steps.py (bucket by bucket, with the
regularization images and accumulation, as the trainer runs them). Concepts with very
different images x repeats train unevenly: the suggestion equalises each
concept's share to the largest one (rarer concepts get more repeats, which is
what users do by hand). Targets are the minimum steps at UNet LR 1e-4.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

KINDS = ("character", "style", "concept")
# kind: (images that can work, images advised, minimum steps at UNet LR 1e-4)
KIND_TARGETS = {
    "character": (15, 40, 1000),
    "style": (50, 100, 2500),
    "concept": (25, 50, 3000),
}
TYPICAL_STEPS = (1500, 5000)
IMBALANCE_RATIO = 2.0   # a concept trained over twice as often as another is flagged


@dataclass
class ConceptShare:
    name: str
    images: int
    repeats: int
    suggested_repeats: int

    @property
    def per_epoch(self) -> int:
        return self.images * self.repeats


def suggest_repeats(counts: list[tuple[str, int, int]]) -> list[ConceptShare]:
    """counts: (name, images, repeats). Suggested repeats give each concept about the largest share."""
    if not counts:
        return []
    target = max(images * repeats for _n, images, repeats in counts)
    return [ConceptShare(name, images, repeats, max(1, round(target / images)) if images else repeats)
            for name, images, repeats in counts]


def is_imbalanced(shares: list[ConceptShare]) -> bool:
    products = [s.per_epoch for s in shares if s.images]
    return len(products) > 1 and max(products) > IMBALANCE_RATIO * min(products)


def epochs_for_target(steps_per_epoch: int, kind: str) -> int:
    """Epochs needed to reach the kind's minimum steps at this many steps per epoch."""
    return math.ceil(KIND_TARGETS[kind][2] / steps_per_epoch) if steps_per_epoch else 0
