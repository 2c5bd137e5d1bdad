"""Aspect-ratio bucketing in the sd-scripts manner.

Each bucket has about the pixel area of `resolution`^2 with both sides
multiples of `step` and within [min_reso, max_reso]; an image goes to the
bucket whose aspect ratio is nearest its own, then is scaled to cover the
bucket and centre-cropped. With `no_upscale` a small image gets a bucket of its
own size (rounded down to `step`) instead of being blown up.
"""
from __future__ import annotations

import functools
import math

from PIL import Image

Bucket = tuple[int, int]  # (width, height)


@functools.lru_cache(maxsize=32)
def make_buckets(resolution: int = 512, min_reso: int = 256, max_reso: int = 1024, step: int = 64,
                 no_upscale: bool = False) -> tuple[Bucket, ...]:
    """All (width, height) buckets, sorted by aspect ratio (width / height).

    With `no_upscale` buckets are made per image by `assign_bucket`; the
    predefined set is still returned for previews.
    """
    max_area = resolution * resolution
    square = (resolution // step) * step
    buckets = {(square, square)}
    width = min_reso
    while width <= max_reso:
        height = min(max_reso, (max_area // width) // step * step)
        if height >= min_reso:
            buckets.add((width, height))
            buckets.add((height, width))
        width += step
    return tuple(sorted(buckets, key=lambda b: (b[0] / b[1], b[0])))


def _own_size_bucket(width: int, height: int, max_area: int, step: int) -> Bucket:
    """no_upscale: the image's own shape, shrunk to max_area if larger, sides rounded down to `step`."""
    if width * height > max_area:
        scale = math.sqrt(max_area / (width * height))
        width, height = width * scale, height * scale
    bucket_w = max(step, int(width // step) * step)
    bucket_h = max(step, int(height // step) * step)
    return bucket_w, bucket_h


def assign_bucket(width: int, height: int, resolution: int = 512, min_reso: int = 256, max_reso: int = 1024,
                  step: int = 64, no_upscale: bool = False) -> Bucket:
    """The (bucket_w, bucket_h) an image of this size is trained at."""
    if no_upscale:
        return _own_size_bucket(width, height, resolution * resolution, step)
    aspect = width / height
    buckets = make_buckets(resolution, min_reso, max_reso, step)
    # Compare aspect ratios in log space so 1:2 and 2:1 are equally far from 1:1.
    return min(buckets, key=lambda b: abs(math.log(b[0] / b[1]) - math.log(aspect)))


def cover_size(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
    """Smallest size with the image's aspect that covers the bucket."""
    scale = max(bucket[0] / width, bucket[1] / height)
    return max(bucket[0], round(width * scale)), max(bucket[1], round(height * scale))


def crop_offset(width: int, height: int, bucket: Bucket) -> tuple[int, int]:
    """(left, top) of the centred crop in the cover-scaled image (SDXL's crop conditioning)."""
    scaled_w, scaled_h = cover_size(width, height, bucket)
    return (scaled_w - bucket[0]) // 2, (scaled_h - bucket[1]) // 2


def resize_and_crop_to_bucket(img: Image.Image, bucket: Bucket) -> Image.Image:
    """Scale to cover the bucket (Lanczos), then crop its centre to exactly bucket size."""
    scaled = cover_size(img.width, img.height, bucket)
    if scaled != img.size:
        img = img.resize(scaled, Image.LANCZOS)
    left, top = (scaled[0] - bucket[0]) // 2, (scaled[1] - bucket[1]) // 2
    return img.crop((left, top, left + bucket[0], top + bucket[1]))
