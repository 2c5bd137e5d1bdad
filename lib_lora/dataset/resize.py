"""Resizing for preprocessing: downscale with Lanczos, upscale at most 2x.

Upscaling goes through an `upscaler(img, scale)` hook when one is given (the
WebUI adapter passes its ESRGAN-class upscalers); headless it is Lanczos. The
hook's output is then resized to the exact size wanted, so a hook that
returns a slightly different size does no harm.
"""
from __future__ import annotations

import math
from typing import Callable

from PIL import Image

Upscaler = Callable[[Image.Image, int], Image.Image]
MAX_UPSCALE = 2.0   # domain.md: upscale small sources at most 2x


def scale_to(img: Image.Image, size: tuple[int, int], upscaler: Upscaler | None = None) -> Image.Image:
    """Resize to `size`; enlargements use the hook when given."""
    if size == img.size:
        return img
    if upscaler is not None and size[0] > img.width:
        factor = math.ceil(size[0] / img.width)
        img = upscaler(img, factor)
        if img.size == size:
            return img
    return img.resize(size, Image.LANCZOS)


def upscale_factor(width: int, height: int, needed_short_side: int) -> float:
    """How much to enlarge so the short side reaches `needed_short_side`, capped at 2x (1.0: none)."""
    short = min(width, height)
    if short >= needed_short_side:
        return 1.0
    return min(MAX_UPSCALE, needed_short_side / short)


def fit_area(width: int, height: int, max_area: int) -> tuple[int, int]:
    """The size with the same aspect and at most max_area pixels (unchanged when already smaller)."""
    if width * height <= max_area:
        return width, height
    scale = math.sqrt(max_area / (width * height))
    return max(1, int(width * scale)), max(1, int(height * scale))
