"""Perceptual hash (DCT pHash) and near-duplicate groups.

The picture is reduced to 32x32 grey, transformed with a 2-D DCT, and the 8x8
lowest frequencies (DC excluded from the median) become 64 bits: above or below
their median. Resizing, recompression and small colour changes move few bits;
a different picture moves about half. Two images within `max_distance` bits
are near duplicates.
"""
from __future__ import annotations

import functools

import numpy as np
from PIL import Image

HASH_SIDE, DCT_SIDE = 8, 32
DEFAULT_MAX_DISTANCE = 6   # of 64 bits; re-encodes and resizes stay below 4 in practice


@functools.lru_cache(maxsize=1)
def _dct_matrix(n: int = DCT_SIDE) -> np.ndarray:
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m


def phash(img: Image.Image) -> int:
    """64-bit perceptual hash of an image (any mode)."""
    grey = np.asarray(img.convert("L").resize((DCT_SIDE, DCT_SIDE), Image.LANCZOS), dtype=np.float64)
    dct = _dct_matrix() @ grey @ _dct_matrix().T
    low = dct[:HASH_SIDE, :HASH_SIDE].flatten()
    bits = low > np.median(low[1:])
    return int(sum(1 << i for i, bit in enumerate(bits) if bit))


def _popcount(values: np.ndarray) -> np.ndarray:
    as_bytes = values.astype(">u8").view(np.uint8).reshape(-1, 8)
    return np.unpackbits(as_bytes, axis=1).sum(axis=1)


def near_duplicate_groups(hashes: list[int], max_distance: int = DEFAULT_MAX_DISTANCE) -> list[list[int]]:
    """Groups (indices into `hashes`, each of 2+) joined by any pair within max_distance bits."""
    n = len(hashes)
    values = np.array(hashes, dtype=np.uint64)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a
    for i in range(n - 1):
        distances = _popcount(values[i + 1:] ^ values[i])
        for j in np.nonzero(distances <= max_distance)[0]:
            parent[find(i + 1 + int(j))] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    return [g for g in groups.values() if len(g) > 1]
