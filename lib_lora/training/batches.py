"""Which samples go into which batch, each epoch: seeded, bucket by bucket.

Every image appears `repeats` times per epoch. Regularization images are drawn
as often as training images (sd-scripts' rule, so a run with reg images has
twice the steps). Batches never mix buckets (the latents must stack). The order
depends only on (seed, epoch), so a resumed run sees the same batches.
"""
from __future__ import annotations

import math
import random
from collections import defaultdict
from dataclasses import dataclass

from ..dataset.scan import ImageItem


@dataclass
class Sample:
    """One image of the run with everything the loop needs to batch it."""
    item: ImageItem
    concept: str
    repeats: int
    is_reg: bool
    bucket: tuple[int, int]          # (width, height) in pixels


def epoch_draws(train: list[Sample], reg: list[Sample]) -> list[Sample]:
    draws = [s for s in train for _ in range(s.repeats)]
    if reg:
        reg_draws = [s for s in reg for _ in range(s.repeats)]
        draws += [reg_draws[i % len(reg_draws)] for i in range(len(draws))]
    return draws


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


def optimizer_steps_per_epoch(train: list[Sample], reg: list[Sample], batch_size: int, grad_accum: int) -> int:
    n_batches = len(epoch_batches(train, reg, batch_size, 0, 0))
    return max(1, math.ceil(n_batches / grad_accum))
