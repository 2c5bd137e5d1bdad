"""Report checks on the pictures: scan problems, size, aspect, transparency,
animation, odd colour modes, exact and near duplicates.

Each check takes the scanned items (and decoded facts) and returns findings;
none of them raises.
"""
from __future__ import annotations

from collections import defaultdict

from .findings import Finding, finding_for_files
from .phash import near_duplicate_groups
from .probe import ImageFacts
from .scan import Dataset, ImageItem

_SCAN_ISSUE_SEVERITY = {"bad_folder_name": "error", "unreadable_image": "error", "not_an_image": "info",
                        "subfolder_ignored": "warning", "caption_unreadable": "warning",
                        "caption_encoding": "info"}


def scan_issue_findings(dataset: Dataset) -> list[Finding]:
    by_kind: dict[str, list] = defaultdict(list)
    for issue in dataset.issues:
        by_kind[(issue.kind, issue.what, issue.fix)].append(issue.path)
    return [finding_for_files(_SCAN_ISSUE_SEVERITY.get(kind, "warning"), kind, what, fix, paths)
            for (kind, what, fix), paths in by_kind.items()]


def size_findings(items: list[ImageItem], resolution: int, concept: str) -> list[Finding]:
    out = []
    tiny = [i.path for i in items if max(i.size) * 2 < resolution]
    small = [i.path for i in items if max(i.size) < resolution and max(i.size) * 2 >= resolution]
    if tiny:
        out.append(finding_for_files(
            "warning", "too_small", f"{len(tiny)} images are under half the training size ({resolution} px) "
            "even on their long side", "Replace them with larger sources, or drop them: a 2x upscale "
            "does not reach the training size", tiny, concept))
    if small:
        out.append(finding_for_files(
            "info", "small", f"{len(small)} images are smaller than the training size ({resolution} px)",
            "Upscale them (at most 2x) with `prep` or a RealESRGAN-class upscaler", small, concept))
    return out


def aspect_findings(items: list[ImageItem], max_aspect: float, concept: str) -> list[Finding]:
    wide = [i.path for i in items if max(i.size) > max_aspect * min(i.size)]
    if not wide:
        return []
    return [finding_for_files(
        "warning", "aspect", f"{len(wide)} images are longer than 1:{max_aspect:g}",
        "Crop them (prep --crop split cuts very long images into pieces) or drop them", wide, concept)]


def format_findings(items: list[ImageItem], facts: dict, concept: str) -> list[Finding]:
    out = []
    animated = [i.path for i in items if i.n_frames > 1]
    odd_modes = [i.path for i in items if i.mode in ("CMYK", "I", "I;16", "I;16B", "F", "YCbCr", "LAB")]
    broken = [p for p, f in facts.items() if f.error and any(p == i.path for i in items)]
    transparent = [i.path for i in items if facts.get(i.path) and facts[i.path].transparent]
    if animated:
        out.append(finding_for_files("info", "animated", f"{len(animated)} animated images: only the first "
                                     "frame is trained", "Export the frames you want as separate images",
                                     animated, concept))
    if odd_modes:
        out.append(finding_for_files("info", "colour_mode", f"{len(odd_modes)} images are CMYK, 16-bit or "
                                     "float; they are converted to 8-bit RGB", "Check their colours look right "
                                     "after `prep`", odd_modes, concept))
    if transparent:
        out.append(finding_for_files("warning", "transparency", f"{len(transparent)} images have transparency",
                                     "Flatten them onto white with `prep` (it also rewrites 'transparent "
                                     "background' to 'white background, simple background')",
                                     transparent, concept))
    if broken:
        out.append(finding_for_files("error", "undecodable", f"{len(broken)} images are damaged and cannot be "
                                     "decoded", "Re-export or remove them", broken, concept))
    return out


def duplicate_findings(facts: list[ImageFacts], max_distance: int) -> list[Finding]:
    usable = [f for f in facts if not f.error]
    out = []
    by_sha: dict[str, list] = defaultdict(list)
    for f in usable:
        by_sha[f.file_sha256].append(f.path)
    exact = [paths for paths in by_sha.values() if len(paths) > 1]
    for paths in exact:
        out.append(finding_for_files("warning", "exact_duplicate", f"{len(paths)} files are identical",
                                     "Keep one (prep --dedupe skips the copies)", paths))
    exact_members = {p for paths in exact for p in paths[1:]}
    rest = [f for f in usable if f.path not in exact_members and f.phash is not None]
    for group in near_duplicate_groups([f.phash for f in rest], max_distance):
        paths = [rest[i].path for i in group]
        out.append(finding_for_files("warning", "near_duplicate", f"{len(paths)} images look nearly the same",
                                     "Keep the best one; near duplicates over-train that picture", paths))
    return out
