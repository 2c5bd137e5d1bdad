"""Report checks on the dataset as a whole: image counts per kind, balance of
images x repeats, total steps against the kind's target, and the bucket preview.
"""
from __future__ import annotations

from collections import Counter

from .balance import KIND_TARGETS, TYPICAL_STEPS, ConceptShare, epochs_for_target, is_imbalanced
from .buckets import assign_bucket
from .findings import Finding
from .scan import Concept, ImageItem


def count_findings(concept: Concept, kind: str) -> list[Finding]:
    can_work, advised, _steps = KIND_TARGETS[kind]
    n = len(concept.items)
    if n < can_work:
        return [Finding("warning", "few_images", f"{n} images; a {kind} LoRA needs about {advised} "
                        f"({can_work} can work only if they are varied)", "Add more varied images",
                        [str(concept.folder)], n, concept.name)]
    if n < advised:
        return [Finding("info", "few_images", f"{n} images; {advised} or more is advised for a {kind}",
                        "More varied images (outfits, angles, backgrounds) make a more flexible LoRA",
                        [str(concept.folder)], n, concept.name)]
    return []


def balance_findings(shares: list[ConceptShare]) -> list[Finding]:
    if not is_imbalanced(shares):
        return []
    text = ", ".join(f"{s.name}: {s.images} x {s.repeats} = {s.per_epoch}" for s in shares)
    advice = ", ".join(f"{s.repeats}_{s.name} -> {s.suggested_repeats}_{s.name}" for s in shares
                       if s.suggested_repeats != s.repeats)
    return [Finding("warning", "imbalance", f"Concepts are trained unevenly (images x repeats per epoch: {text})",
                    f"Rename the folders to even out the repeats: {advice}", [], len(shares))]


def steps_findings(steps: int, steps_per_epoch: int, kind: str, epochs: int, batch_size: int) -> list[Finding]:
    """`steps` and `steps_per_epoch` as epoch_steps.py counts them (what the trainer runs)."""
    minimum = KIND_TARGETS[kind][2]
    if steps < minimum:
        need = epochs_for_target(steps_per_epoch, kind)
        return [Finding("warning", "few_steps", f"{steps} steps ({epochs} epochs, batch {batch_size}); a {kind} "
                        f"LoRA needs about {minimum} at UNet LR 1e-4",
                        f"Train about {need} epochs, or raise the repeats", [], steps)]
    if steps > TYPICAL_STEPS[1] * 2:
        return [Finding("info", "many_steps", f"{steps} steps is far beyond the usual {TYPICAL_STEPS[0]}-"
                        f"{TYPICAL_STEPS[1]}", "Fewer epochs or repeats may avoid overtraining; compare epochs "
                        "in the grid", [], steps)]
    return []


def bucket_preview(items: list[ImageItem], resolution: int, min_reso: int, max_reso: int, step: int,
                   no_upscale: bool) -> Counter:
    """{(bucket_w, bucket_h): image count}."""
    return Counter(assign_bucket(i.size[0], i.size[1], resolution, min_reso, max_reso, step, no_upscale)
                   for i in items)


def bucket_findings(buckets: Counter, batch_size: int) -> list[Finding]:
    lonely = {b: n for b, n in buckets.items() if n < batch_size}
    if not lonely or len(buckets) == 1:
        return []
    text = ", ".join(f"{w}x{h} ({n})" for (w, h), n in sorted(lonely.items()))
    return [Finding("info", "small_buckets", f"Buckets with fewer images than the batch size: {text}",
                    "Their batches are smaller; cropping those images to a common shape evens this out",
                    [], sum(lonely.values()))]


def bucket_rows(buckets: Counter) -> list[dict]:
    return [{"width": w, "height": h, "images": n} for (w, h), n in sorted(buckets.items(),
                                                                            key=lambda kv: kv[0][0] / kv[0][1])]


def resolution_histogram(items: list[ImageItem]) -> dict[str, int]:
    """Images by short side."""
    edges = [(0, 256, "<256"), (256, 512, "256-511"), (512, 768, "512-767"), (768, 1024, "768-1023"),
             (1024, 10**9, ">=1024")]
    hist = {label: 0 for _lo, _hi, label in edges}
    for item in items:
        short = min(item.size)
        for lo, hi, label in edges:
            if lo <= short < hi:
                hist[label] += 1
    return hist

