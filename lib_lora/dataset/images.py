"""Opening dataset images: which files count as images, their size after EXIF
orientation, and decoding to plain RGB (alpha flattened on white).

Every format Pillow can open counts. Decoding never trusts the file: a
decompression bomb, a truncated or corrupt file raises `ImageReadError` with a
plain reason, which the scan and the report turn into findings.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from ..errors import DatasetError
from .file_kinds import special_file_reason

# Orientation values 5-8 rotate by 90 or 270 degrees, so width and height swap.
_SWAPPING_ORIENTATIONS = {5, 6, 7, 8}
_EXIF_ORIENTATION_TAG = 0x0112
# Pillow's own default limit (about 89 Mpx): far beyond any training image.
MAX_PIXELS = 89_478_485


class ImageReadError(DatasetError):
    """An image file cannot be opened or decoded; `reason` is for the user.

    A DatasetError, so one escaping into training still reads as what/where/fix."""

    def __init__(self, path: Path, reason: str):
        self.path, self.reason = Path(path), reason
        super().__init__(reason, where=str(path), fix="Re-export or remove this file")


@dataclass(frozen=True)
class ImageHeader:
    size: tuple[int, int]   # (width, height) after EXIF orientation
    format: str
    mode: str
    n_frames: int
    orientation: int = 1   # EXIF orientation; 1 = as stored


def image_extensions() -> frozenset[str]:
    """Lower-case extensions (with dot) of every format Pillow can open here."""
    Image.init()
    return frozenset(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)


def open_checked(path: Path) -> Image.Image:
    """Image.open with the bomb warning promoted to an error and our own pixel limit.

    Only regular files are opened: a FIFO named like an image would block the read forever."""
    special = special_file_reason(path)
    if special:
        raise ImageReadError(path, special[0].upper() + special[1:])
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            img = Image.open(path)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageReadError(path, "Image is too large (over 89 megapixels; possibly a decompression bomb)")
        except FileNotFoundError:
            raise ImageReadError(path, "File disappeared while reading")
        except (OSError, ValueError, SyntaxError) as e:
            reason = "Empty file (0 bytes)" if _is_empty(path) else f"Not a readable image ({_short(e)})"
            raise ImageReadError(path, reason)
    if img.width * img.height > MAX_PIXELS:
        img.close()
        raise ImageReadError(path, "Image is too large (over 89 megapixels; possibly a decompression bomb)")
    if img.width == 0 or img.height == 0:
        img.close()
        raise ImageReadError(path, "Image has a zero width or height")
    return img


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _short(err: Exception) -> str:
    text = str(err).split(" '")[0].split(" \"")[0]  # drop the path Pillow appends
    return text[:120] or type(err).__name__


def read_header(path: str | os.PathLike) -> ImageHeader:
    """Size (after EXIF orientation), format, mode and frame count, without decoding pixels."""
    path = Path(path)
    img = open_checked(path)
    with img:
        width, height = img.size
        try:
            orientation = img.getexif().get(_EXIF_ORIENTATION_TAG, 1)
        except Exception:  # broken EXIF must not make a good image unusable
            orientation = 1
        if orientation in _SWAPPING_ORIENTATIONS:
            width, height = height, width
        return ImageHeader((width, height), img.format or "", img.mode, getattr(img, "n_frames", 1), orientation)


def _to_8bit(img: Image.Image) -> Image.Image:
    """16-bit and float greyscale scaled into 0..255; Pillow's convert() would clip them."""
    arr = np.asarray(img, dtype=np.float64)
    if img.mode == "F":
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(arr)
    elif arr.max(initial=0) > 255:
        arr = arr / 257.0   # 65535 -> 255
    return Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")


def has_transparency(img: Image.Image) -> bool:
    """True when the image has an alpha channel or palette transparency that is actually used."""
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info:
        alpha = img.convert("RGBA").getchannel("A")
        return alpha.getextrema()[0] < 255
    return False


def flatten_to_rgb(img: Image.Image) -> Image.Image:
    """Any mode to RGB; transparent parts become white."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        img = _to_8bit(img)
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La", "P") or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        white.alpha_composite(rgba)
        return white.convert("RGB")
    return img.convert("RGB")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Decode fully (first frame), EXIF orientation applied, mode kept (alpha preserved)."""
    path = Path(path)
    img = open_checked(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette/EXIF warnings are noise here
        try:
            img.load()
            oriented = ImageOps.exif_transpose(img) or img
            if oriented is img:
                oriented = img.copy()
        except (OSError, ValueError, SyntaxError) as e:
            raise ImageReadError(path, f"Image data is damaged or truncated ({_short(e)})")
        finally:
            img.close()
    return oriented


def load_image_rgb(path: str | os.PathLike) -> Image.Image:
    """The image as training sees it: first frame, EXIF-oriented, alpha on white, RGB."""
    return flatten_to_rgb(load_image(path))
