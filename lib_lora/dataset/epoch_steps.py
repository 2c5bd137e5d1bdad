"""How many optimizer steps one epoch of a dataset takes: the one count behind the trainer's
plan, the dataset report and the Train tab's steps calculator, so all three show the number that runs.

The rules (sd-scripts'; training/batches.py builds the very batches from `epoch_draws`):
- every training image is drawn `repeats` times per epoch, after the validation share is held out;
- regularization images are drawn as often as training images, cycling through their own
  draws in folder order, so a run with them has twice the draws;
- a batch never mixes buckets (the latents must stack), so each bucket ends with its own short
  batch: batches = sum over buckets of ceil(draws in the bucket / batch size);
- with gradient accumulation the optimizer steps every `accum` batches and at the epoch's end.
Only image sizes, folders and these settings count, so the report can say it before any model loads.
"""
from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Iterable, Protocol, Sequence, TypeVar

from .buckets import Bucket, assign_bucket

if TYPE_CHECKING:
    from ..config import DatasetConfig

T = TypeVar("T")
D = TypeVar("D", bound="Drawn")


class Drawn(Protocol):
    repeats: int


@dataclass(frozen=True)
class Bucketing:
    """Which bucket an image of a size trains in (the dataset options of the same names)."""
    resolution: int = 512
    min_reso: int = 256
    max_reso: int = 1024
    step: int = 64
    no_upscale: bool = False
    enabled: bool = True

    @classmethod
    def of_config(cls, d: "DatasetConfig") -> "Bucketing":
        return cls(d.resolution, d.min_bucket_reso, d.max_bucket_reso, d.bucket_reso_steps, d.bucket_no_upscale,
                   d.enable_bucket)

    def bucket_of(self, size: tuple[int, int]) -> Bucket:
        if not self.enabled:
            return (self.resolution, self.resolution)
        return tuple(assign_bucket(size[0], size[1], self.resolution, self.min_reso, self.max_reso, self.step,
                                   self.no_upscale))


def split_validation(items: list[T], share: float, seed: int) -> tuple[list[T], list[T]]:
    """(trained, held out): a fixed, seeded share of images held out (at least one when share > 0
    and there are 2+), in their original order."""
    if share <= 0 or len(items) < 2:
        return items, []
    order = list(range(len(items)))
    random.Random(seed).shuffle(order)
    n_val = min(len(items) - 1, max(1, round(len(items) * share)))
    held = set(order[:n_val])
    return [s for i, s in enumerate(items) if i not in held], [s for i, s in enumerate(items) if i in held]


def epoch_draws(train: Sequence[D], reg: Sequence[D]) -> list[D]:
    """Every draw of an epoch, before bucketing and shuffling: each image `repeats` times, then as
    many regularization draws as training draws, cycling through the reg images' own draws."""
    draws = [s for s in train for _ in range(s.repeats)]
    if reg:
        reg_draws = [s for s in reg for _ in range(s.repeats)]
        draws += [reg_draws[i % len(reg_draws)] for i in range(len(draws))]
    return draws


def draws_per_bucket(train: Iterable[tuple[Bucket, int]], reg: Sequence[tuple[Bucket, int]]) -> Counter:
    """{bucket: draws per epoch} for (bucket, repeats) per image: what `epoch_draws` gives, counted
    without listing the draws (a 99999_x folder is counted, not built)."""
    counts: Counter = Counter()
    n_train = 0
    for bucket, repeats in train:
        counts[bucket] += repeats
        n_train += repeats
    reg_total = sum(repeats for _bucket, repeats in reg)
    if reg_total and n_train:
        full_cycles, rest = divmod(n_train, reg_total)
        for bucket, repeats in reg:
            taken = min(repeats, rest)          # the last, partial cycle takes the first images in order
            counts[bucket] += repeats * full_cycles + taken
            rest -= taken
    return counts


def batches_per_epoch(per_bucket: Counter, batch_size: int) -> int:
    return sum(math.ceil(n / batch_size) for n in per_bucket.values() if n)


def optimizer_steps_per_epoch(train: Iterable[tuple[Bucket, int]], reg: Sequence[tuple[Bucket, int]],
                              batch_size: int, grad_accum: int = 1) -> int:
    """Optimizer steps of one epoch for (bucket, repeats) per training and regularization image."""
    return max(1, math.ceil(batches_per_epoch(draws_per_bucket(train, reg), batch_size) / grad_accum))


def run_length(steps_per_epoch: int, epochs: int, max_train_steps: int = 0) -> tuple[int, int]:
    """(epochs, total optimizer steps): max_train_steps caps the run (or sets it, with epochs 0),
    and the epochs then cover just those steps."""
    total = steps_per_epoch * epochs
    if max_train_steps:
        total = min(total, max_train_steps) if epochs else max_train_steps
        epochs = math.ceil(total / steps_per_epoch)
    return epochs, total
