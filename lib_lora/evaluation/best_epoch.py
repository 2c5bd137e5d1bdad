"""Best-epoch hint: which saved epoch to try first, and why.

Two signals per epoch, each optional:
- the validation loss on held-out images (lower is better; it rises when the
  LoRA starts to memorise), and
- the WD14 tag recall of the epoch's sample images against the training
  captions: the share of the dataset's common tags (in at least `common_share`
  of the captions) that the tagger finds in the samples. It rises while the
  LoRA learns the subject.
Either signal alone is enough. With both, each is scaled to 0..1 across epochs
and averaged; on a near tie the earlier epoch wins, because later epochs are the
ones more likely overtrained. The explanation names the signals used, why the
others were not, and why that epoch.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterable

from ..dataset.tags import split_tags, tag_key

TagsFor = Callable[[list], list[set[str]]]   # images (paths or PIL) -> tags found in each
TIE = 0.02
VALIDATION, RECALL = "validation loss", "tag recall of the samples"


@dataclass
class EpochScore:
    epoch: int
    validation_loss: float | None = None
    tag_recall: float | None = None
    score: float = 0.0


@dataclass
class BestEpochHint:
    best: int | None
    scores: list[EpochScore] = field(default_factory=list)
    explanation: str = ""
    used: list[str] = field(default_factory=list)               # the signals the choice rests on
    unused: dict[str, str] = field(default_factory=dict)        # signal -> why it was not there

    def to_rows(self) -> list[list]:
        return [[s.epoch, _fmt(s.validation_loss), _fmt(s.tag_recall), f"{s.score:.2f}",
                 "recommended" if s.epoch == self.best else ""] for s in self.scores]


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"


def common_tags(captions: Iterable[str], common_share: float = 0.3, skip: Iterable[str] = ()) -> set[str]:
    """Tags in at least `common_share` of the captions, as dataset.tags.tag_key spells them (the
    split and the key the dataset report and the tag editor count with)."""
    captions = list(captions)
    counts: Counter = Counter()
    for caption in captions:
        counts.update({tag_key(t) for t in split_tags(caption)})
    skipped = {tag_key(s) for s in skip if s.strip()}
    need = max(1, math.ceil(common_share * len(captions)))
    return {tag for tag, n in counts.items() if n >= need and tag not in skipped}


def tag_recall(sample_tags: list[set[str]], target: set[str]) -> float | None:
    if not target or not sample_tags:
        return None
    found = [len({tag_key(t) for t in tags} & target) / len(target) for tags in sample_tags]
    return sum(found) / len(found)


def _scaled(values: dict[int, float], higher_is_better: bool) -> dict[int, float]:
    if not values:
        return {}
    lo, hi = min(values.values()), max(values.values())
    if hi - lo < 1e-12:
        return {e: 1.0 for e in values}
    return {e: ((v - lo) if higher_is_better else (hi - v)) / (hi - lo) for e, v in values.items()}


def best_epoch_hint(epochs: list[int], validation_losses: dict[int, float] | None = None,
                    recalls: dict[int, float] | None = None, unused: dict[str, str] | None = None) -> BestEpochHint:
    """`unused`: for a signal that has no values, why (said in the explanation instead of a generic hint)."""
    validation_losses = {e: v for e, v in (validation_losses or {}).items()
                         if e in epochs and v is not None and v == v}
    recalls = {e: v for e, v in (recalls or {}).items() if e in epochs and v is not None}
    reasons = {VALIDATION: "the run has no validation loss (set dataset.validation_split, e.g. 0.1)",
               RECALL: "no tag recall (needs sample images every epoch and a tagger)"}
    reasons.update(unused or {})
    missing = {name: why for name, why in reasons.items()
               if not (validation_losses if name == VALIDATION else recalls)}
    if not epochs:
        return BestEpochHint(None, [], "No saved epochs yet: train first.", [], missing)
    loss_part, recall_part = _scaled(validation_losses, False), _scaled(recalls, True)
    scores = []
    for epoch in sorted(epochs):
        parts = [p[epoch] for p in (loss_part, recall_part) if epoch in p]
        scores.append(EpochScore(epoch, validation_losses.get(epoch), recalls.get(epoch),
                                 sum(parts) / len(parts) if parts else 0.0))
    used = [name for name, part in ((VALIDATION, loss_part), (RECALL, recall_part)) if part]
    if not used:
        return BestEpochHint(max(epochs), scores, (
            f"No signal to compare epochs, so the last epoch ({max(epochs)}) is suggested. "
            + " ".join(f"{name.capitalize()}: {why}." for name, why in missing.items())), used, missing)
    top = max(s.score for s in scores)
    best = min(s.epoch for s in scores if s.score >= top - TIE)
    return BestEpochHint(best, scores, _explain(best, scores, validation_losses, recalls, used, missing),
                         used, missing)


def _explain(best: int, scores: list[EpochScore], losses: dict[int, float], recalls: dict[int, float],
             used: list[str], missing: dict[str, str]) -> str:
    chosen = next(s for s in scores if s.epoch == best)
    basis = (f"Based on the {used[0]} only." if len(used) == 1 else
             f"Based on the {used[0]} and the {used[1]}, each scaled to 0..1 across epochs and averaged.")
    reasons = []
    if chosen.validation_loss is not None:
        low = min(losses, key=losses.get)
        reasons.append(f"its validation loss is {chosen.validation_loss:.4f}" +
                       (" (the lowest: it fits held-out images best)" if low == best
                        else f" (lowest {losses[low]:.4f} at epoch {low})"))
    if chosen.tag_recall is not None:
        high = max(recalls, key=recalls.get)
        reasons.append(f"its samples show {chosen.tag_recall:.0%} of the dataset's common tags" +
                       (" (the most: it has learned the subject best)" if high == best
                        else f" (most: {recalls[high]:.0%} at epoch {high})"))
    later = [s.epoch for s in scores if s.epoch > best]
    tail = (f" Later epochs ({', '.join(map(str, later))}) score no better and are more "
            "likely overtrained." if later else "")
    note = "".join(f" The {name} was not used: {why}." for name, why in missing.items())
    return (f"{basis} Try epoch {best} first: " + " and ".join(reasons) + "." + tail + note +
            " Check it in the grid at weights 0.6-1.0: a healthy LoRA holds up at 0.9.")


def recalls_from_samples(samples: dict[int, list], captions: list[str], tags_for: TagsFor,
                         skip: Iterable[str] = ()) -> dict[int, float]:
    """{epoch: recall} from saved sample images and the training captions."""
    target = common_tags(captions, skip=skip)
    out = {}
    for epoch, images in samples.items():
        value = tag_recall(tags_for(list(images)), target)
        if value is not None:
            out[epoch] = value
    return out
