"""Which samples go into which batch, each epoch: seeded, bucket by bucket.

Which draws an epoch has, and so how many steps it takes, is dataset/epoch_steps.py's
rule (the plan, the dataset report and the calculator count with it); here they are
grouped by bucket (batches never mix buckets: the latents must stack) and shuffled.
The order depends only on (seed, epoch), so a resumed run sees the same batches.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass

from ..dataset.epoch_steps import epoch_draws
from ..dataset.scan import ImageItem


@dataclass
class Sample:
    """One image of the run with everything the loop needs to batch it."""
    item: ImageItem
    concept: str
    repeats: int
    is_reg: bool
    bucket: tuple[int, int]          # (width, height) in pixels


def epoch_batches(train: list[Sample], reg: list[Sample], batch_size: int, seed: int,
                  epoch: int) -> list[list[Sample]]:
    rng = random.Random(seed * 100_003 + epoch)
    by_bucket: dict[tuple[int, int], list[Sample]] = defaultdict(list)
    for s in epoch_draws(train, reg):
        by_bucket[s.bucket].append(s)
    batches = []
    for bucket in sorted(by_bucket):
        group = by_bucket[bucket]
        rng.shuffle(group)
        batches += [group[i:i + batch_size] for i in range(0, len(group), batch_size)]
    rng.shuffle(batches)
    return batches

