"""The arithmetic count of an epoch's draws equals the draws the trainer lists (epoch_draws)."""
from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass

from lib_lora.dataset.epoch_steps import draws_per_bucket, epoch_draws, optimizer_steps_per_epoch, run_length


@dataclass
class Img:
    bucket: tuple[int, int]
    repeats: int


def test_counted_draws_equal_listed_draws_for_random_datasets():
    rng = random.Random(3)
    buckets = [(64, 64), (96, 64), (64, 96), (128, 32)]
    for _ in range(300):
        train = [Img(rng.choice(buckets), rng.randint(1, 7)) for _ in range(rng.randint(1, 9))]
        reg = [Img(rng.choice(buckets), rng.randint(1, 5)) for _ in range(rng.choice([0, 1, 2, 5, 12]))]
        listed = Counter(s.bucket for s in epoch_draws(train, reg))
        assert draws_per_bucket([(s.bucket, s.repeats) for s in train], [(s.bucket, s.repeats) for s in reg]) == listed


def test_steps_per_epoch_and_run_length_by_hand():
    # 5 draws in one bucket and 2 in another, batch 2: 3 + 1 batches; accumulation 3 -> 2 steps
    assert optimizer_steps_per_epoch([((64, 64), 5), ((96, 64), 2)], [], 2, 3) == 2
    assert run_length(7, 10) == (10, 70)
    assert run_length(7, 10, 30) == (5, 30)            # the epochs cover the capped steps
    assert run_length(7, 2, 100) == (2, 14)            # a cap above the run changes nothing
