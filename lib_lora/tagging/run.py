"""A tagging run over a folder: decode in a thread pool while the models run,
write captions by mode, report progress, stop when asked.

Decoding (JPEG/PNG inflate, resize) releases the GIL, so a few threads keep the
ONNX session fed; only the next batch is decoded ahead, so memory stays at two
batches whatever the folder size. Unreadable images are listed, not fatal.
Captions come from a Captioner (captioner.py): the WD1.4 models by default, or
the WebUI's DeepDanbooru / BLIP passed in by lib_lora/webui; either way the
same write modes, trigger word, filters, undo, progress and cancel apply.
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
from ..dataset.input_limits import normalize_extension
from ..errors import DatasetError, TaggerError
from .caption_writer import caption_path_for, write_tags
from .captioner import NAMES, Captioner, Wd14Captioner
from .model_files import resolve_model
from .postprocess import TagFilter
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


def _batches(items: list[Path], size: int) -> list[list[Path]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _default_captioner(cfg: TaggingConfig, models: list[Wd14Model] | None) -> Captioner:
    if cfg.captioner != "wd14":
        raise TaggerError(f"{NAMES.get(cfg.captioner, cfg.captioner)} is one of the WebUI's own interrogators",
                          where=f"tagging.captioner = {cfg.captioner}",
                          fix="Tag with wd14 here, or from the Train LoRA tab inside the WebUI")
    return Wd14Captioner(models if models is not None else load_models(cfg))


def run_tagging(target: str | os.PathLike | list[Path], cfg: TaggingConfig, progress: ProgressFn | None = None,
                should_stop: StopFn | None = None, models: list[Wd14Model] | None = None,
                captioner: Captioner | None = None) -> TagRunResult:
    """Tag every image of a folder (recursive) or of a list; a snapshot allows one undo.

    The captioner is closed when the run ends (done, cancelled or failed)."""
    normalize_extension(cfg.caption_extension)   # '.png' or '' would write tags over images: refuse first
    special: list[tuple[Path, str]] = []       # FIFOs and devices named like images: findings, never read
    paths = list(target) if isinstance(target, list) else find_images(Path(target), special)
    if not paths:
        raise DatasetError("No images to tag", where=str(target), fix="Choose a folder that holds images")
    captioner = captioner or _default_captioner(cfg, models)
    try:
        result = _run(paths, target, cfg, captioner, progress, should_stop)
        result.failed += special
        return result
    finally:
        captioner.close()


def _run(paths: list[Path], target: str | os.PathLike | list[Path], cfg: TaggingConfig, captioner: Captioner,
         progress: ProgressFn | None, should_stop: StopFn | None) -> TagRunResult:
    flt = tag_filter_from_config(cfg)
    result = TagRunResult(providers=dict(captioner.providers), total=len(paths))
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
            _write_batch(batch, decoded, captioner, flt, cfg, result)
            if progress:
                progress(result.written + result.skipped + len(result.failed), len(paths), str(batch[-1]))
    return result


def _write_batch(batch: list[Path], decoded: list, captioner: Captioner, flt: TagFilter, cfg: TaggingConfig,
                 result: TagRunResult) -> None:
    good = [(p, img) for p, img in zip(batch, decoded) if isinstance(img, Image.Image)]
    result.failed += [(p, img) for p, img in zip(batch, decoded) if isinstance(img, str)]
    if not good:
        return
    all_tags = captioner.caption([img for _, img in good], flt)
    for (path, _img), tags in zip(good, all_tags):
        if write_tags(path, tags, cfg.write_mode, cfg.caption_extension, cfg.trigger_word):
            result.written += 1
        else:
            result.skipped += 1


def probabilities(model: Wd14Model, img: Image.Image) -> np.ndarray:
    """One image's raw probabilities (for the tab's per-image view)."""
    return model.predict(wd14_batch([wd14_input(img, model.input_size)]))[0]
