"""The best-epoch hint of one run, from what the run left beside its LoRA files.

- validation loss per epoch: `<name>-epochs.json`, written as the run trains (it has
  values when dataset.validation_split > 0);
- tag recall of the sample images (`samples/<name>-e000003-p0.png`) against the training
  captions (found through the `<name>.toml` the run wrote): needs sample images and a
  tagger that loads.
Each signal that is there is used; for each that is not, the hint says why and what to do,
so either one alone gives a real recommendation.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..config import TaggingConfig
from ..errors import LoraError
from .best_epoch import RECALL, VALIDATION, BestEpochHint, TagsFor, best_epoch_hint, recalls_from_samples
from .epoch_grid import epoch_files, epoch_of
from .samples import saved_samples

MakeTagsFor = Callable[[TaggingConfig], TagsFor]


@dataclass
class Signal:
    values: dict[int, float] = field(default_factory=dict)
    why_not: str = ""          # when there are no values: what was missing and what to do


def epochs_file(output_dir: str | Path, name: str) -> Path:
    from lib_lora.training.saving import epochs_log_file   # the trainer writes it

    return epochs_log_file(output_dir, name)


def read_epochs(output_dir: str | Path, name: str) -> list[dict]:
    """The per-epoch log of a run ([] when there is none or it is damaged)."""
    path = epochs_file(output_dir, name)
    try:
        rows = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else []
    except (OSError, ValueError):
        return []
    return rows if isinstance(rows, list) else []


def run_captions(lora_dir: str | Path, name: str) -> tuple[list[str], str]:
    """Training captions of a run (from the TOML written beside it) and its trigger word."""
    from ..config import load_train_config
    from ..dataset.scan import scan_dataset
    toml = Path(lora_dir) / f"{name}.toml"
    if not toml.is_file():
        return [], ""
    cfg = load_train_config(toml)
    try:
        dataset = scan_dataset(cfg.dataset.train_dir, cfg.dataset.caption_extension)
    except LoraError:
        return [], cfg.dataset.trigger_word
    return [item.caption for item in dataset.items], cfg.dataset.trigger_word


def validation_signal(lora_dir: str | Path, name: str) -> Signal:
    rows = read_epochs(lora_dir, name)
    values = {int(r["epoch"]): float(r["validation_loss"]) for r in rows
              if isinstance(r, dict) and r.get("epoch") is not None and r.get("validation_loss") is not None}
    if values:
        return Signal(values)
    if not rows:
        return Signal(why_not=f"no per-epoch log ({epochs_file(lora_dir, name).name}) was found beside the run")
    return Signal(why_not="the run held no images out (set dataset.validation_split, e.g. 0.1, and train again)")


def recall_signal(lora_dir: str | Path, name: str, tagger: str, models_dir: str = "",
                  make_tags_for: MakeTagsFor | None = None) -> Signal:
    samples = saved_samples(lora_dir, name)
    if not samples:
        return Signal(why_not="the run saved no sample images (set sample.every_n_epochs and sample prompts)")
    if not tagger.strip():
        return Signal(why_not="no tagger is chosen (pick one in the Tagging section)")
    captions, trigger = run_captions(lora_dir, name)
    if not captions:
        return Signal(why_not="the training captions were not found (the run's TOML or dataset is gone)")
    if make_tags_for is None:
        from .wd14_recall import wd14_tags_for as make_tags_for
    try:
        tags_for = make_tags_for(TaggingConfig(models=[tagger.strip()], models_dir=models_dir))
    except LoraError as err:
        return Signal(why_not=f"the tagger could not be loaded: {err}")
    values = recalls_from_samples(samples, captions, tags_for, skip=[trigger])
    if values:
        return Signal(values)
    return Signal(why_not="no tag is common to the training captions, so there is nothing to recall")


def hint_for_run(lora_dir: str | Path, name: str, tagger: str = "", models_dir: str = "",
                 make_tags_for: MakeTagsFor | None = None) -> BestEpochHint:
    if not name:
        raise LoraError("No run is chosen", where="Run", fix="Train a run first, then press Refresh runs")
    epochs = [epoch_of(p) for p in epoch_files(lora_dir, name)]     # sorted, epoch files only
    loss = validation_signal(lora_dir, name)
    recall = recall_signal(lora_dir, name, tagger, models_dir, make_tags_for)
    unused = {label: s.why_not for label, s in ((VALIDATION, loss), (RECALL, recall)) if not s.values}
    return best_epoch_hint(epochs, loss.values, recall.values, unused)
