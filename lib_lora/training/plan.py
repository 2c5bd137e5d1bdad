"""The run's plan: which images, how often, in which buckets, how many steps, roughly how much memory.

Printed and returned before any model work (a `--dry-run` stops here), so the
user sees `images x repeats x epochs / batch` before waiting for anything.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from ..config import TrainConfig
from ..dataset.epoch_steps import Bucketing, optimizer_steps_per_epoch, run_length, split_validation
from ..dataset.input_limits import check_plan_size
from ..dataset.scan import Dataset, scan_dataset
from ..errors import DatasetError
from .batches import Sample
from .memory import MemoryEstimate, ModelSizes, estimate


@dataclass
class TrainPlan:
    train: list[Sample]
    validation: list[Sample]
    reg: list[Sample]
    epochs: int
    batch_size: int
    grad_accum: int
    steps_per_epoch: int             # optimizer steps
    total_steps: int
    buckets: dict[str, int] = field(default_factory=dict)
    concepts: dict[str, dict] = field(default_factory=dict)
    memory: MemoryEstimate | None = None   # known when the plan was made for a model
    warnings: list[str] = field(default_factory=list)

    @property
    def n_images(self) -> int:
        return len(self.train)

    def summary(self) -> str:
        lines = [f"Plan: {self.n_images} images"
                 + (f" (+{len(self.reg)} regularization)" if self.reg else "")
                 + (f", {len(self.validation)} held out for validation" if self.validation else "")]
        for name, info in self.concepts.items():
            lines.append(f"  {name}: {info['images']} images x {info['repeats']} repeats")
        uncapped = self.epochs * self.steps_per_epoch
        capped = f", stopping at {self.total_steps} (max_train_steps)" if self.total_steps < uncapped else ""
        lines.append(f"  {self.epochs} epoch{'s' if self.epochs != 1 else ''} x {self.steps_per_epoch} steps = "
                     f"{uncapped} steps{capped} (batch {self.batch_size}, gradient accumulation {self.grad_accum})")
        lines.append("  buckets: " + ", ".join(f"{k}: {v}" for k, v in sorted(self.buckets.items())))
        if self.memory is not None:
            lines.append(f"  estimated memory: {self.memory.describe()}")
        lines += [f"  warning: {w}" for w in self.warnings]
        return "\n".join(lines)


def _samples(ds: Dataset, bucketing: Bucketing, is_reg: bool) -> list[Sample]:
    return [Sample(item, concept.name, concept.repeats, is_reg, bucketing.bucket_of(item.size))
            for concept in ds.concepts for item in concept.items]


def make_plan(cfg: TrainConfig, sizes: ModelSizes | None = None) -> TrainPlan:
    """Scan and plan; `sizes` (training.memory.model_sizes of the model) adds the memory estimate."""
    d, t = cfg.dataset, cfg.training
    ds = scan_dataset(d.train_dir, d.caption_extension)
    bucketing = Bucketing.of_config(d)
    samples = _samples(ds, bucketing, is_reg=False)
    if not samples:
        raise DatasetError("No usable images were found", where=d.train_dir,
                           fix="Put images (and .txt captions) into <repeats>_<name> folders inside this folder")
    train, val = split_validation(samples, d.validation_split, t.seed)
    reg = _samples(scan_dataset(d.reg_dir, d.caption_extension, is_reg=True), bucketing, True) if d.reg_dir else []
    # refuse an absurd plan (a 99999_x folder, a million epochs) before its batches are built
    draws = sum(s.repeats for s in train) * (2 if reg else 1) + sum(s.repeats for s in reg)
    check_plan_size(draws, max(t.epochs, 1), t.batch_size, d.train_dir)
    spe = optimizer_steps_per_epoch([(s.bucket, s.repeats) for s in train], [(s.bucket, s.repeats) for s in reg],
                                    t.batch_size, t.gradient_accumulation_steps)
    epochs, total = run_length(spe, t.epochs, t.max_train_steps)
    concepts: dict[str, dict] = {}
    for s in train:
        info = concepts.setdefault(s.concept, {"images": 0, "repeats": s.repeats})
        info["images"] += 1
    buckets = Counter(f"{s.bucket[0]}x{s.bucket[1]}" for s in train)
    largest = max(s.bucket[0] * s.bucket[1] for s in train)
    memory = estimate(cfg, sizes, largest, len(train) + len(reg)) if sizes is not None else None
    plan = TrainPlan(train, val, reg, epochs, t.batch_size, t.gradient_accumulation_steps, spe, total,
                     dict(buckets), concepts, memory)
    plan.warnings = [str(issue) for issue in ds.issues]
    return plan
