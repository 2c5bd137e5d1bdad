"""The WD1.4 tagger's input tensor, made as SmilingWolf's reference Space makes it.

1) alpha composited on white, 2) padded to a square with white, centred
(left/top padding rounded down), 3) resized to the model's size with bicubic
only when the square is not already that size, 4) float32 in 0..255, no
normalisation, 5) channels flipped RGB -> BGR (the models were trained on
OpenCV-loaded images), 6) NHWC. kohya's script differs only in the resize
filter; we follow the reference Space. EXIF orientation is applied first so
tags describe the picture as it is trained.
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from ..dataset.images import flatten_to_rgb


def pad_to_square_white(img: Image.Image) -> Image.Image:
    side = max(img.size)
    square = Image.new("RGB", (side, side), (255, 255, 255))
    square.paste(img, ((side - img.width) // 2, (side - img.height) // 2))
    return square


def wd14_input(img: Image.Image, size: int) -> np.ndarray:
    """One image as the (size, size, 3) float32 BGR array the model expects (batch axis not added)."""
    square = pad_to_square_white(flatten_to_rgb(img))
    if square.width != size:
        square = square.resize((size, size), Image.BICUBIC)
    rgb = np.asarray(square, dtype=np.float32)
    return np.ascontiguousarray(rgb[:, :, ::-1])


def wd14_batch(images: list[np.ndarray]) -> np.ndarray:
    """Stack prepared images into the NHWC batch."""
    return np.stack(images, axis=0).astype(np.float32, copy=False)
