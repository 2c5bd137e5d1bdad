"""What a tagging run asks of whoever writes the captions, and the WD1.4 ONNX implementation.

A captioner turns a batch of decoded RGB images into ordered tags per image;
the run (run.py) does the rest the same way for every captioner: filters
(exclusions, junk, underscores), trigger word first, write modes, snapshot for
undo, progress and cancel. `close()` is called once when the run ends, however
it ends, so a captioner holding GPU memory (the WebUI's DeepDanbooru and BLIP,
lib_lora/webui/interrogators.py) gives it back.
"""
from __future__ import annotations

from typing import Protocol

from PIL import Image

from .postprocess import TagFilter, caption_tags, scores_above_threshold, union_scores
from .wd14 import Wd14Model
from .wd14_input import wd14_batch, wd14_input

NAMES = {"wd14": "WD14 (ONNX)", "deepdanbooru": "DeepDanbooru (WebUI)", "blip": "BLIP (WebUI)"}


class Captioner(Protocol):
    providers: dict[str, str]       # model name -> where it runs (ONNX provider or torch device)

    def caption(self, images: list[Image.Image], flt: TagFilter) -> list[list[str]]:
        """Final tags per image, already filtered by `flt` (postprocess.filter_tags)."""
        ...

    def close(self) -> None:
        ...


class Wd14Captioner:
    """One or several WD1.4 models; several give the union of their tags."""

    def __init__(self, models: list[Wd14Model]):
        self.models = models
        self.providers = {m.name: m.active_provider for m in models}

    def caption(self, images: list[Image.Image], flt: TagFilter) -> list[list[str]]:
        per_model = []
        for model in self.models:
            batch = wd14_batch([wd14_input(img, model.input_size) for img in images])
            probs = model.predict(batch)
            per_model.append([scores_above_threshold(row, model.labels, flt) for row in probs])
        return [caption_tags(union_scores([scores[i] for scores in per_model]), flt) for i in range(len(images))]

    def close(self) -> None:
        """ONNX sessions are freed with the object; nothing to move off the GPU."""
