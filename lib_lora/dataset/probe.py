"""Decoding each image once for the report: transparency, perceptual hash, file hash.

JPEGs are decoded at reduced size (Pillow's draft mode), which is all a 64-bit
hash and a transparency check need, so a few hundred photos take seconds.
Files are read in a small thread pool: decoding releases the GIL.
"""
from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps

from .images import ImageReadError, open_checked, has_transparency
from .phash import phash

THUMB_SIDE = 256


@dataclass
class ImageFacts:
    path: Path
    file_sha256: str = ""
    phash: int | None = None
    transparent: bool = False
    error: str = ""          # decoding failed (truncated data); the header was fine


def _thumbnail(path: Path) -> Image.Image:
    img = open_checked(path)
    with img:
        if img.format == "JPEG":
            img.draft("RGB", (THUMB_SIDE, THUMB_SIDE))
        img.load()
        oriented = ImageOps.exif_transpose(img) or img
        thumb = oriented.copy()
    thumb.thumbnail((THUMB_SIDE, THUMB_SIDE))
    return thumb


def probe_image(path: Path) -> ImageFacts:
    facts = ImageFacts(path)
    try:
        facts.file_sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
        thumb = _thumbnail(path)
        facts.transparent = has_transparency(thumb)
        facts.phash = phash(thumb)
    except ImageReadError as e:
        facts.error = e.reason
    except (OSError, ValueError, SyntaxError) as e:
        facts.error = f"Image data is damaged or truncated ({str(e)[:80]})"
    return facts


def probe_images(paths: list[Path], workers: int = 2,
                 progress: Callable[[int, int, str], None] | None = None) -> list[ImageFacts]:
    """Facts of every image, in order; progress(done, total, path) after each (it may raise to stop)."""
    facts = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for done, fact in enumerate(pool.map(probe_image, paths), start=1):
            facts.append(fact)
            if progress:
                progress(done, len(paths), str(fact.path))
    return facts
