"""Unique output names for preprocessing: two sources never write the same image or caption.

Prep changes some extensions (a.gif and a.webp become PNG, a changed a.jpeg
becomes a.jpg), so `a.gif` and `a.png` in one folder would both become `a.png`
and share `a.txt`. Names are compared by stem, case-folded (captions pair with
images by stem, and Windows and macOS folders ignore case). Of the sources that
share a stem, the one in a format prep writes as is (PNG, then JPEG) keeps the
name; the others get their old extension added (`a_gif.png`), then a number if
that is taken too. Every rename is listed so the prep report can say so.
"""
from __future__ import annotations

from pathlib import Path

# Sources in these formats keep their name when stems clash: their output needs no new extension.
KEEPS_NAME_FIRST = {".png": 0, ".jpg": 1, ".jpeg": 2}


def stem_key(rel: Path) -> str:
    return str(rel.with_suffix("")).casefold()


class OutputNames:
    """Hands out output paths and records the renames; every path is relative to its folder
    (sources to the source folder, outputs to the destination), so the layouts line up."""

    def __init__(self, sources: list[Path]):
        self._owner: dict[str, Path] = {}
        ranked = sorted(sources, key=lambda p: (KEEPS_NAME_FIRST.get(p.suffix.lower(), len(KEEPS_NAME_FIRST)),
                                                str(p)))
        for source in ranked:
            self._owner.setdefault(stem_key(source), source)
        self._claimed: set[str] = set()
        self.renamed: list[tuple[Path, Path]] = []      # (source, relative output path)

    def _free_for(self, source: Path, rel: Path) -> bool:
        key = stem_key(rel)
        return key not in self._claimed and self._owner.get(key, source) == source

    def claim(self, source: Path, wanted: Path) -> Path:
        """`wanted` (relative output path) if free for this source, else a new unique name."""
        rel = wanted
        if not self._free_for(source, rel):
            base = f"{wanted.stem}_{source.suffix.lstrip('.').lower() or 'file'}"
            rel, number = wanted.with_name(base + wanted.suffix), 2
            while not self._free_for(source, rel):
                rel, number = wanted.with_name(f"{base}_{number}{wanted.suffix}"), number + 1
            self.renamed.append((source, rel))
        self._claimed.add(stem_key(rel))
        return rel
