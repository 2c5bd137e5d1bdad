"""Preprocessing: fixed copies of a dataset (never the originals, unless in_place).

For each image: 1) decode with EXIF orientation, 2) flatten transparency onto
white and rewrite 'transparent background' in its caption, 3) crop (none,
centre square, focal square, split oversized), 4) downscale what is far larger
than training needs and upscale what is smaller, at most 2x, 5) save beside a
copy of its caption under DST with the same relative path. Images that need
none of this are copied byte for byte. Duplicates (exact and near) keep only
the largest of each group. Output names are unique (output_names.py): `a.gif`
beside `a.png` becomes `a_gif.png`, and the result lists every rename.
Upscaling uses the `upscaler` hook when given (the WebUI's upscalers, chosen by
`cfg.upscaler`); without one only Lanczos is available.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image

from ..config import PrepConfig
from ..errors import ConfigError, DatasetError, WriteError
from ..fileio import write_bytes, write_text, write_with
from ..safe_paths import WriteGuard, guarded, is_within, resolved
from .crop import Box, centre_square, focal_square, split_boxes
from .dedupe import duplicates_to_skip
from .images import ImageReadError, flatten_to_rgb, has_transparency, load_image, read_header
from .output_names import OutputNames
from .resize import Upscaler, fit_area, scale_to, upscale_factor
from .input_limits import normalize_extension
from .tag_rewrite import rewrite_transparent_background
from .textfiles import read_caption_bytes, read_caption_file

ProgressFn = Callable[[int, int, str], None]
# Far larger than any bucket needs; saves disk and time in every later step.
DOWNSCALE_AREA_FACTOR = 4


@dataclass
class PrepResult:
    written: list[Path] = field(default_factory=list)      # new or changed images
    copied: list[Path] = field(default_factory=list)       # unchanged, copied byte for byte
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    flattened: int = 0
    upscaled: int = 0
    renamed: list[tuple[Path, Path]] = field(default_factory=list)   # (source, output) when names clashed
    cancelled: bool = False


def _check_paths(src: Path, dst: Path | None, cfg: PrepConfig) -> Path:
    if not src.is_dir():
        raise DatasetError("The source folder does not exist", where=str(src), fix="Check the path")
    if cfg.in_place:
        if cfg.crop == "split":
            raise ConfigError("prep.crop", "split", "another crop mode when working in place, or give a DST folder")
        return src
    if dst is None:
        raise DatasetError("No destination folder given", where="prep",
                           fix="Give a DST folder for the fixed copies (or ask for in-place explicitly)")
    src_r, dst_r = resolved(src), resolved(dst)
    if dst_r == src_r or src_r in dst_r.parents:
        raise DatasetError("The destination is the source folder or inside it", where=str(dst),
                           fix="Choose a folder outside the source, e.g. a sibling folder")
    if dst_r in src_r.parents:
        raise DatasetError("The destination holds the source folder: copies would land among the originals",
                           where=str(dst), fix="Choose a folder outside the source, e.g. a sibling folder")
    if dst.exists() and not dst.is_dir():
        raise DatasetError("The destination is a file, not a folder", where=str(dst),
                           fix="Give a folder for the fixed copies (it is created when missing)")
    return dst


def _guard(src: Path, dst_root: Path, images: list[Path], in_place: bool) -> WriteGuard:
    """Copies go only into DST and never onto the source tree; in place, only into SRC (validated
    caption extensions keep caption text off the images)."""
    if in_place:
        return WriteGuard([src], purpose="prep in place")
    return WriteGuard([dst_root], protected=images, protected_trees=[src], purpose="prep")


def _pieces(img: Image.Image, cfg: PrepConfig) -> list[Box]:
    if cfg.crop == "centre":
        return [centre_square(*img.size)]
    if cfg.crop == "focal":
        return [focal_square(img)]
    if cfg.crop == "split":
        return split_boxes(img.width, img.height, cfg.max_aspect)
    return [(0, 0, img.width, img.height)]


def _target_size(size: tuple[int, int], cfg: PrepConfig) -> tuple[int, int]:
    res = cfg.resolution
    if cfg.crop in ("centre", "focal"):
        side = size[0]
        if side > res:
            return res, res
        wanted = round(side * upscale_factor(side, side, res)) if cfg.upscale_small else side
        return wanted, wanted
    width, height = fit_area(size[0], size[1], DOWNSCALE_AREA_FACTOR * res * res)
    if cfg.upscale_small:
        factor = upscale_factor(width, height, res)
        width, height = round(width * factor), round(height * factor)
    return width, height


def check_upscaler(cfg: PrepConfig, upscaler: Upscaler | None) -> None:
    """Without a hook (headless) only Lanczos exists; say so before any file is written."""
    if upscaler is None and cfg.upscale_small and cfg.upscaler.strip().lower() not in ("", "lanczos"):
        raise ConfigError("prep.upscaler", cfg.upscaler,
                          "'lanczos' outside the WebUI (its upscalers, such as ESRGAN, run only inside it: "
                          "preprocess from the Train LoRA tab there)")


def _output_path(dst_root: Path, rel: Path, suffix: str, index: int | None, names: OutputNames | None) -> Path:
    stem = rel.stem if index is None else f"{rel.stem}_part{index + 1}"
    wanted = rel.parent / (stem + suffix)
    return dst_root / (names.claim(rel, wanted) if names else wanted)


def _save(img: Image.Image, target: Path, fmt: str) -> None:
    if fmt == "JPEG" and target.suffix.lower() in (".jpg", ".jpeg"):
        write_with(target, lambda tmp: img.convert("RGB").save(tmp, "JPEG", quality=95))
    else:
        save_format = Image.registered_extensions().get(target.suffix.lower(), "PNG")
        write_with(target, lambda tmp: img.save(tmp, save_format))


def _copy_caption(image: Path, outputs: list[Path], ext: str, flattened: bool) -> None:
    caption_file = image.with_suffix(ext)
    if not caption_file.is_file():
        return
    if flattened:
        text = rewrite_transparent_background(read_caption_file(caption_file)[0])
        for out in outputs:
            write_text(out.with_suffix(ext), text)
    else:
        data = read_caption_bytes(caption_file)
        for out in outputs:
            if out.with_suffix(ext) != caption_file:
                write_bytes(out.with_suffix(ext), data)


def _prepare_pixels(image: Path, cfg: PrepConfig, result: PrepResult) -> tuple[Image.Image, bool]:
    img = load_image(image)
    if cfg.flatten_alpha and has_transparency(img):
        result.flattened += 1
        return flatten_to_rgb(img), True
    if img.mode not in ("RGB", "RGBA", "L"):
        img = flatten_to_rgb(img) if not has_transparency(img) else img.convert("RGBA")
    return img, False


def _process_image(image: Path, src: Path, dst: Path, cfg: PrepConfig, upscaler: Upscaler | None,
                   result: PrepResult, names: OutputNames | None) -> None:
    header = read_header(image)
    img, flattened = _prepare_pixels(image, cfg, result)
    boxes = _pieces(img, cfg)
    full = boxes == [(0, 0, img.width, img.height)]
    pieces = []
    for box in boxes:
        piece = img if full else img.crop(box)
        size = _target_size(piece.size, cfg)
        if size[0] > piece.width:
            result.upscaled += 1
        pieces.append(scale_to(piece, size, upscaler))
    ext = normalize_extension(cfg.caption_extension)
    unchanged = full and not flattened and header.orientation == 1 and pieces[0].size == img.size
    rel = image.relative_to(src)
    if unchanged:
        target = image if cfg.in_place else _output_path(dst, rel, image.suffix, None, names)
        if target != image:
            write_bytes(target, image.read_bytes())
            result.copied.append(target)
        _copy_caption(image, [target], ext, False)
        return
    outputs = []
    suffix = ".jpg" if header.format == "JPEG" else ".png"
    for index, piece in enumerate(pieces):
        part = None if len(pieces) == 1 else index
        target = image if cfg.in_place else _output_path(dst, rel, suffix, part, names)
        _save(piece, target, header.format)
        outputs.append(target)
    result.written += outputs
    _copy_caption(image, outputs, ext, flattened)


def _dedupe(images: list[Path], cfg: PrepConfig, result: PrepResult, workers: int) -> list[Path]:
    from .probe import probe_images
    sizes = {}
    for path in images:
        try:
            sizes[path] = read_header(path).size
        except ImageReadError:
            pass
    skip = duplicates_to_skip(probe_images(images, workers), sizes)
    result.skipped += [(p, f"Duplicate of {kept.name}") for p, kept in skip.items()]
    return [p for p in images if p not in skip]


def run_prep(src: str | os.PathLike, dst: str | os.PathLike | None, cfg: PrepConfig,
             upscaler: Upscaler | None = None, progress: ProgressFn | None = None,
             should_stop: Callable[[], bool] | None = None, workers: int = 2) -> PrepResult:
    """Write fixed copies of every image under `src` into `dst` (same relative layout)."""
    from .files import find_images
    src = Path(src)
    normalize_extension(cfg.caption_extension)   # refuse '.png' or '' before anything is written
    dst_root = _check_paths(src, Path(dst) if dst else None, cfg)
    check_upscaler(cfg, upscaler)
    result = PrepResult()
    images = find_images(src, result.skipped)
    if cfg.in_place:       # a link to a file elsewhere is not this folder's to change
        linked_out = [p for p in images if not is_within(p, src)]
        result.skipped += [(p, "A link to a file outside the folder: not changed in place") for p in linked_out]
        images = [p for p in images if p not in linked_out]
    guard = _guard(src, dst_root, images, cfg.in_place)
    if cfg.dedupe and not cfg.in_place:
        images = _dedupe(images, cfg, result, workers)
    names = None if cfg.in_place else OutputNames([p.relative_to(src) for p in images])
    with guarded(guard):
        for done, image in enumerate(images, start=1):
            if should_stop and should_stop():
                result.cancelled = True
                break
            _process_one(image, src, dst_root, cfg, upscaler, result, names)
            if progress:
                progress(done, len(images), str(image))
    if names:
        result.renamed = [(src / source, dst_root / rel) for source, rel in names.renamed]
    return result


def _process_one(image: Path, src: Path, dst_root: Path, cfg: PrepConfig, upscaler: Upscaler | None,
                 result: PrepResult, names: OutputNames | None) -> None:
    """One image; its own problems become a skip, the destination's (disk full, read-only) stop the run."""
    try:
        _process_image(image, src, dst_root, cfg, upscaler, result, names)
    except ImageReadError as e:
        result.skipped.append((image, e.reason))
    except WriteError as e:
        if e.errno != errno.ENAMETOOLONG:
            raise
        result.skipped.append((image, "The output name is too long for the file system"))
    except DatasetError as e:    # its caption is a FIFO or far too large
        result.skipped.append((image, e.what))
    except OSError as e:
        result.skipped.append((image, f"Cannot read or write: {e.strerror or e}"))
