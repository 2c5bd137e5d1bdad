"""A `tags_for` function for the best-epoch hint, built on the WD1.4 tagger package."""
from __future__ import annotations

from pathlib import Path

from PIL import Image

from ..config import TaggingConfig


def wd14_tags_for(cfg: TaggingConfig):
    """images (paths or PIL) -> [set of tags] with the same filters as captioning."""
    from ..tagging.postprocess import caption_tags, scores_above_threshold, union_scores
    from ..tagging.run import load_models, probabilities, tag_filter_from_config
    models = load_models(cfg)
    flt = tag_filter_from_config(cfg)

    def tags_for(images: list) -> list[set[str]]:
        out = []
        for image in images:
            img = image if isinstance(image, Image.Image) else Image.open(Path(image)).convert("RGB")
            scores = [scores_above_threshold(probabilities(m, img), m.labels, flt) for m in models]
            out.append(set(caption_tags(union_scores(scores), flt)))
        return out
    return tags_for
