"""Crop boxes for preprocessing: centre square, square around the subject
(focal point), and splitting oversized images into overlapping squares.

The focal point is the centre of mass of an interest map: edge strength plus
difference from the border colour (the background), so the subject pulls the
crop towards itself. It is a cheap stand-in for the WebUI's face/entropy based
autocrop, good enough to keep a figure in frame on a plain background.
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image

Box = tuple[int, int, int, int]   # left, top, right, bottom
_MAP_SIDE = 128
SPLIT_OVERLAP = 0.2


def centre_square(width: int, height: int) -> Box:
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def interest_map(img: Image.Image) -> np.ndarray:
    """(h, w) weights, small resolution, larger where the subject probably is."""
    small = img.convert("RGB")
    small.thumbnail((_MAP_SIDE, _MAP_SIDE))
    rgb = np.asarray(small, dtype=np.float32) / 255.0
    grey = rgb.mean(axis=2)
    gy, gx = np.gradient(grey)
    edges = np.hypot(gx, gy)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    background = np.median(border, axis=0)
    difference = np.abs(rgb - background).sum(axis=2)
    return edges / (edges.max() + 1e-6) + difference / (difference.max() + 1e-6)


def focal_point(img: Image.Image) -> tuple[float, float]:
    """(x, y) in image pixels: the interest map's centre of mass."""
    weights = interest_map(img)
    total = float(weights.sum())
    if total <= 1e-6:
        return img.width / 2, img.height / 2
    ys, xs = np.mgrid[0:weights.shape[0], 0:weights.shape[1]]
    fx = float((xs * weights).sum() / total + 0.5) / weights.shape[1] * img.width
    fy = float((ys * weights).sum() / total + 0.5) / weights.shape[0] * img.height
    return fx, fy


def focal_square(img: Image.Image) -> Box:
    """The largest square containing the focal point as near its centre as the edges allow."""
    side = min(img.size)
    fx, fy = focal_point(img)
    left = int(round(min(max(fx - side / 2, 0), img.width - side)))
    top = int(round(min(max(fy - side / 2, 0), img.height - side)))
    return left, top, left + side, top + side


def split_boxes(width: int, height: int, max_aspect: float) -> list[Box]:
    """Oversized (longer than 1:max_aspect) images become overlapping squares; others stay whole."""
    long_side, short_side = max(width, height), min(width, height)
    if long_side <= max_aspect * short_side:
        return [(0, 0, width, height)]
    overlap = int(short_side * SPLIT_OVERLAP)
    count = math.ceil((long_side - overlap) / (short_side - overlap))
    stride = (long_side - short_side) / (count - 1)
    starts = [int(round(i * stride)) for i in range(count)]
    if width >= height:
        return [(s, 0, s + short_side, height) for s in starts]
    return [(0, s, width, s + short_side) for s in starts]
