"""Choosing which duplicates to leave out: of each group of identical files or
near-identical pictures (perceptual hash), the largest image is kept."""
from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from .phash import DEFAULT_MAX_DISTANCE, near_duplicate_groups
from .probe import ImageFacts


def duplicates_to_skip(facts: list[ImageFacts], sizes: dict[Path, tuple[int, int]],
                       max_distance: int = DEFAULT_MAX_DISTANCE) -> dict[Path, Path]:
    """{duplicate path: the kept path it duplicates}."""
    usable = [f for f in facts if not f.error and f.phash is not None]
    groups: list[list[Path]] = []
    by_sha: dict[str, list[Path]] = defaultdict(list)
    for f in usable:
        by_sha[f.file_sha256].append(f.path)
    groups += [paths for paths in by_sha.values() if len(paths) > 1]
    groups += [[usable[i].path for i in g] for g in near_duplicate_groups([f.phash for f in usable], max_distance)]
    skip: dict[Path, Path] = {}
    for group in groups:
        keep = max(group, key=lambda p: (sizes.get(p, (0, 0))[0] * sizes.get(p, (0, 0))[1], -group.index(p)))
        for path in group:
            if path != keep and path not in skip:
                skip[path] = keep
    return skip
