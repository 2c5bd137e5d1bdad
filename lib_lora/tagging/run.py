"""A tagging run over a folder: decode in a thread pool while the models run,
write captions by mode, report progress, stop when asked.

Decoding (JPEG/PNG inflate, resize) releases the GIL, so a few threads keep the
ONNX session fed; only the next batch is decoded ahead, so memory stays at two
batches whatever the folder size. Unreadable images are listed, not fatal.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from ..config import TaggingConfig
from ..dataset.files import find_images
from ..dataset.images import ImageReadError, load_image_rgb
from ..errors import DatasetError
from .caption_writer import caption_path_for, write_tags
from .model_files import resolve_model
from .postprocess import TagFilter, caption_tags, scores_above_threshold, union_scores
from .snapshot import save_snapshot
from .wd14 import Wd14Model
from .wd14_input import wd14_batch, wd14_input

ProgressFn = Callable[[int, int, str], None]   # (done, total, current file)
StopFn = Callable[[], bool]


@dataclass
class TagRunResult:
    written: int = 0
    skipped: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)
    providers: dict[str, str] = field(default_factory=dict)   # model name -> active provider
    cancelled: bool = False
    total: int = 0


def tag_filter_from_config(cfg: TaggingConfig) -> TagFilter:
    return TagFilter(cfg.general_threshold, cfg.character_threshold, tuple(cfg.exclude_tags),
                     cfg.remove_junk_tags, cfg.replace_underscores, cfg.trigger_word)


def load_models(cfg: TaggingConfig) -> list[Wd14Model]:
    return [Wd14Model(resolve_model(spec, cfg.models_dir or None)) for spec in cfg.models]


def _decode(path: Path) -> Image.Image | str:
    try:
        return load_image_rgb(path)
    except ImageReadError as e:
        return e.reason
    except OSError as e:
        return f"Cannot read the file: {e.strerror or e}"


def _tag_batch(images: list[Image.Image], models: list[Wd14Model], flt: TagFilter) -> list[list[str]]:
    per_model = []
    for model in models:
        batch = wd14_batch([wd14_input(img, model.input_size) for img in images])
        probs = model.predict(batch)
        per_model.append([scores_above_threshold(row, model.labels, flt) for row in probs])
    return [caption_tags(union_scores([scores[i] for scores in per_model]), flt) for i in range(len(images))]


def _batches(items: list[Path], size: int) -> list[list[Path]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def run_tagging(target: str | os.PathLike | list[Path], cfg: TaggingConfig, progress: ProgressFn | None = None,
                should_stop: StopFn | None = None, models: list[Wd14Model] | None = None) -> TagRunResult:
    """Tag every image of a folder (recursive) or of a list; a snapshot allows one undo."""
    paths = list(target) if isinstance(target, list) else find_images(Path(target))
    if not paths:
        raise DatasetError("No images to tag", where=str(target), fix="Choose a folder that holds images")
    models = models if models is not None else load_models(cfg)
    flt = tag_filter_from_config(cfg)
    result = TagRunResult(providers={m.name: m.active_provider for m in models}, total=len(paths))
    root = Path(target) if not isinstance(target, list) else Path(os.path.commonpath([p.parent for p in paths]))
    save_snapshot(root, [caption_path_for(p, cfg.caption_extension) for p in paths], "tagging")
    batches = _batches(paths, cfg.batch_size)
    with ThreadPoolExecutor(max_workers=max(1, cfg.decode_workers)) as pool:
        pending = [pool.submit(_decode, p) for p in batches[0]]
        for index, batch in enumerate(batches):
            decoded = [f.result() for f in pending]
            if index + 1 < len(batches):   # decode the next batch while this one runs
                pending = [pool.submit(_decode, p) for p in batches[index + 1]]
            if should_stop and should_stop():
                result.cancelled = True
                break
            _write_batch(batch, decoded, models, flt, cfg, result)
            if progress:
                progress(result.written + result.skipped + len(result.failed), len(paths), str(batch[-1]))
    return result


def _write_batch(batch: list[Path], decoded: list, models: list[Wd14Model], flt: TagFilter, cfg: TaggingConfig,
                 result: TagRunResult) -> None:
    good = [(p, img) for p, img in zip(batch, decoded) if isinstance(img, Image.Image)]
    result.failed += [(p, img) for p, img in zip(batch, decoded) if isinstance(img, str)]
    if not good:
        return
    all_tags = _tag_batch([img for _, img in good], models, flt)
    for (path, _img), tags in zip(good, all_tags):
        if write_tags(path, tags, cfg.write_mode, cfg.caption_extension, cfg.trigger_word):
            result.written += 1
        else:
            result.skipped += 1


def probabilities(model: Wd14Model, img: Image.Image) -> np.ndarray:
    """One image's raw probabilities (for the tab's per-image view)."""
    return model.predict(wd14_batch([wd14_input(img, model.input_size)]))[0]
