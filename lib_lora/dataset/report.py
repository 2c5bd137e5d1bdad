"""The dataset report: every check users do by hand (shared/domain.md), in one pass.

`build_report(train_dir, options)` scans the folder, decodes each image once
(probe.py) and runs the checks; the result is plain data (`Report.to_dict()` is
the `--json` output and what the tab shows). Nothing here raises on a bad
dataset except a folder that cannot be scanned at all, and nothing blocks
training: findings are advice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from .balance import KIND_TARGETS, KINDS, ConceptShare, suggest_repeats
from .checks_balance import (balance_findings, bucket_findings, bucket_preview, bucket_rows, count_findings,
                             resolution_histogram, steps_findings)
from .checks_captions import (association_findings, caption_presence_findings, junk_findings,
                              trigger_findings)
from .checks_images import (aspect_findings, duplicate_findings, format_findings, scan_issue_findings,
                            size_findings)
from .epoch_steps import Bucketing, optimizer_steps_per_epoch, run_length, split_validation
from .findings import Finding, sort_findings
from .phash import DEFAULT_MAX_DISTANCE
from .probe import probe_images
from .scan import Dataset, scan_dataset
from .tagstats import caption_tag_sets, strongest_pairs, tag_frequency

if TYPE_CHECKING:
    from ..config import TrainConfig


@dataclass
class ReportOptions:
    kind: str = "character"                 # character | style | concept
    caption_extension: str = ".txt"
    trigger_word: str = ""
    resolution: int = 512
    min_bucket_reso: int = 256
    max_bucket_reso: int = 1024
    bucket_reso_steps: int = 64
    bucket_no_upscale: bool = False
    max_aspect: float = 2.0
    enable_bucket: bool = True
    # what the step count needs to be the trainer's (epoch_steps.py): the run's settings of these names
    epochs: int = 10
    batch_size: int = 2
    gradient_accumulation_steps: int = 1
    max_train_steps: int = 0
    reg_dir: str = ""
    validation_split: float = 0.0
    seed: int = 42
    near_duplicate_distance: int = DEFAULT_MAX_DISTANCE
    top_tags: int = 30
    workers: int = 2

    @classmethod
    def for_run(cls, cfg: "TrainConfig", kind: str = "character") -> "ReportOptions":
        """The report of a config.TrainConfig's dataset, its steps counted as that run takes them."""
        d, t = cfg.dataset, cfg.training
        return cls(kind=kind, caption_extension=d.caption_extension, trigger_word=d.trigger_word,
                   resolution=d.resolution, min_bucket_reso=d.min_bucket_reso, max_bucket_reso=d.max_bucket_reso,
                   bucket_reso_steps=d.bucket_reso_steps, bucket_no_upscale=d.bucket_no_upscale,
                   enable_bucket=d.enable_bucket, epochs=t.epochs, batch_size=t.batch_size,
                   gradient_accumulation_steps=t.gradient_accumulation_steps, max_train_steps=t.max_train_steps,
                   reg_dir=d.reg_dir, validation_split=d.validation_split, seed=t.seed)

    def bucketing(self) -> Bucketing:
        return Bucketing(self.resolution, self.min_bucket_reso, self.max_bucket_reso, self.bucket_reso_steps,
                         self.bucket_no_upscale, self.enable_bucket)


@dataclass
class Report:
    root: Path
    kind: str
    findings: list[Finding] = field(default_factory=list)
    concepts: list[ConceptShare] = field(default_factory=list)
    steps_per_epoch: int = 0                # optimizer steps, as the trainer runs them
    total_steps: int = 0
    target_steps: int = 0
    resolution_histogram: dict[str, int] = field(default_factory=dict)
    buckets: list[dict] = field(default_factory=list)
    tag_frequency: list[tuple[str, int]] = field(default_factory=list)
    co_occurrence: list[dict] = field(default_factory=list)
    images: int = 0

    def counts(self) -> dict[str, int]:
        return {sev: sum(1 for f in self.findings if f.severity == sev) for sev in ("error", "warning", "info")}

    def to_dict(self) -> dict:
        return {
            "root": str(self.root), "kind": self.kind, "images": self.images, "severity_counts": self.counts(),
            "findings": [f.to_dict() for f in self.findings],
            "concepts": [{"name": s.name, "images": s.images, "repeats": s.repeats, "per_epoch": s.per_epoch,
                          "suggested_repeats": s.suggested_repeats} for s in self.concepts],
            "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps,
            "target_steps": self.target_steps,
            "resolution_histogram": self.resolution_histogram, "buckets": self.buckets,
            "tag_frequency": [{"tag": t, "count": n} for t, n in self.tag_frequency],
            "co_occurrence": self.co_occurrence,
        }


def _check_options(options: ReportOptions) -> None:
    from ..errors import ConfigError
    if options.kind not in KINDS:
        raise ConfigError("kind", options.kind, "one of " + ", ".join(KINDS))
    if options.epochs < 1 or options.batch_size < 1 or options.gradient_accumulation_steps < 1:
        raise ConfigError("epochs/batch_size/gradient_accumulation_steps",
                          (options.epochs, options.batch_size, options.gradient_accumulation_steps),
                          "whole numbers of at least 1")
    if not 64 <= options.resolution <= 8192:    # the bucket preview divides by it
        raise ConfigError("resolution", options.resolution, "a size in pixels from 64 to 8192 (512 is usual)")


def steps_per_epoch(dataset: Dataset, options: ReportOptions) -> int:
    """Optimizer steps per epoch, counted by the trainer's rule (epoch_steps.py); 0 without images."""
    bucketing = options.bucketing()
    train = [(bucketing.bucket_of(i.size), c.repeats) for c in dataset.concepts for i in c.items]
    train, _held_out = split_validation(train, options.validation_split, options.seed)
    if not train:
        return 0
    reg = []
    if options.reg_dir:
        reg_set = scan_dataset(options.reg_dir, options.caption_extension, is_reg=True)
        reg = [(bucketing.bucket_of(i.size), c.repeats) for c in reg_set.concepts for i in c.items]
    return optimizer_steps_per_epoch(train, reg, options.batch_size, options.gradient_accumulation_steps)


def _concept_findings(dataset: Dataset, facts: dict, options: ReportOptions) -> list[Finding]:
    out: list[Finding] = []
    for concept in dataset.concepts:
        items = concept.items
        out += count_findings(concept, options.kind)
        out += size_findings(items, options.resolution, concept.name)
        out += aspect_findings(items, options.max_aspect, concept.name)
        out += format_findings(items, facts, concept.name)
        out += caption_presence_findings(concept)
        out += junk_findings(concept)
        out += trigger_findings(concept, options.trigger_word)
    return out


def report_for_dataset(dataset: Dataset, options: ReportOptions,
                       progress: Callable[[int, int, str], None] | None = None) -> Report:
    """All checks over an already scanned dataset."""
    _check_options(options)
    items = dataset.items
    facts = {f.path: f for f in probe_images([i.path for i in items], options.workers, progress)}
    shares = suggest_repeats([(c.name, len(c.items), c.repeats) for c in dataset.concepts])
    tag_sets = caption_tag_sets([i.caption for i in items])
    pairs = strongest_pairs(tag_sets)
    buckets = bucket_preview(items, options.resolution, options.min_bucket_reso, options.max_bucket_reso,
                             options.bucket_reso_steps, options.bucket_no_upscale)
    per_epoch = steps_per_epoch(dataset, options)
    steps = run_length(per_epoch, options.epochs, options.max_train_steps)[1] if per_epoch else 0
    findings = scan_issue_findings(dataset) + _concept_findings(dataset, facts, options)
    findings += duplicate_findings(list(facts.values()), options.near_duplicate_distance)
    findings += balance_findings(shares) + steps_findings(steps, per_epoch, options.kind, options.epochs,
                                                        options.batch_size)
    findings += bucket_findings(buckets, options.batch_size) + association_findings(pairs)
    return Report(
        root=dataset.root, kind=options.kind, findings=sort_findings(findings), concepts=shares,
        steps_per_epoch=per_epoch, total_steps=steps,
        target_steps=KIND_TARGETS[options.kind][2], resolution_histogram=resolution_histogram(items),
        buckets=bucket_rows(buckets), tag_frequency=tag_frequency(tag_sets).most_common(options.top_tags),
        co_occurrence=[p.to_dict() for p in pairs], images=len(items))


def build_report(train_dir: str | os.PathLike, options: ReportOptions | None = None,
                 progress: Callable[[int, int, str], None] | None = None) -> Report:
    """progress(done, total, path) per image read (the slow part); it may raise to stop the check."""
    options = options or ReportOptions()
    return report_for_dataset(scan_dataset(train_dir, options.caption_extension), options, progress)
