"""Scanning a dataset: `<train_dir>/<repeats>_<name>/` concept folders of images
with same-named caption files.

Only headers are read here (size after EXIF orientation, format, mode), so a
scan of a few hundred images takes well under a second. Anything that cannot
be used (a folder without the `<repeats>_` prefix, an unreadable image, a file
that is not an image) is skipped and recorded as a `ScanIssue`; the scan only
raises when nothing at all can be trained on.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import DatasetError
from ..safe_paths import shown
from .file_kinds import special_file_reason
from .images import ImageReadError, image_extensions, load_image_rgb, read_header
from .input_limits import check_repeats, count_entry, list_folder, normalize_extension
from .textfiles import read_caption_file

__all__ = ["Concept", "Dataset", "ImageItem", "ScanIssue", "load_image_rgb", "scan_dataset",
           "parse_concept_folder_name", "normalize_extension"]

CONCEPT_FOLDER = re.compile(r"^(\d+)_(.+)$")
# Folders made by OS tools and archivers; never concept folders, never worth a finding.
_IGNORED_NAMES = {"__MACOSX", ".ipynb_checkpoints", "@eaDir", "$RECYCLE.BIN", "System Volume Information"}
_IGNORED_FILES = {"thumbs.db", "desktop.ini", ".ds_store"}
_SIDECAR_SUFFIXES = {".npz", ".json", ".toml", ".caption", ".wd14_tags"}


@dataclass
class ImageItem:
    path: Path
    caption: str                 # '' when the caption file is missing or empty
    size: tuple[int, int]        # (width, height) after EXIF orientation
    caption_path: Path | None    # None when there is no caption file
    caption_encoding: str = ""
    format: str = ""
    mode: str = ""
    n_frames: int = 1


@dataclass
class Concept:
    name: str
    repeats: int
    folder: Path
    items: list[ImageItem] = field(default_factory=list)


@dataclass
class ScanIssue:
    """Something skipped or odd, found while scanning. `kind` is a stable key for the report."""
    kind: str
    path: Path
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.what} ({shown(self.path)})" + (f". {self.fix}" if self.fix else "")


@dataclass
class Dataset:
    root: Path
    concepts: list[Concept]
    is_reg: bool = False
    caption_extension: str = ".txt"
    issues: list[ScanIssue] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        return [str(issue) for issue in self.issues]

    @property
    def items(self) -> list[ImageItem]:
        return [item for concept in self.concepts for item in concept.items]


def parse_concept_folder_name(name: str) -> tuple[int, str] | None:
    """'10_alice' -> (10, 'alice'); None when the name has no '<repeats>_' prefix."""
    match = CONCEPT_FOLDER.match(name)
    if not match:
        return None
    digits = match.group(1)
    # int() of thousands of digits is slow or refused; anything this long is refused later as too many repeats
    return (int(digits) if len(digits) <= 12 else 10 ** 12), match.group(2)


def _is_ignored(path: Path) -> bool:
    return path.name.startswith(".") or path.name in _IGNORED_NAMES or path.name.lower() in _IGNORED_FILES


def _read_caption(image: Path, ext: str, issues: list[ScanIssue]) -> tuple[str, Path | None, str]:
    caption_path = image.with_suffix(ext)
    if not caption_path.is_file():
        return "", None, ""
    try:
        text, encoding = read_caption_file(caption_path)
    except OSError as e:
        issues.append(ScanIssue("caption_unreadable", caption_path, f"Caption cannot be read: {e.strerror}",
                                "Check the file's permissions"))
        return "", None, ""
    except DatasetError as e:
        issues.append(ScanIssue("caption_unreadable", caption_path, e.what, e.fix))
        return "", None, ""
    if encoding == "cp1252":
        issues.append(ScanIssue("caption_encoding", caption_path,
                                "Caption is not UTF-8 or UTF-16; read as Windows-1252",
                                "Re-save it as UTF-8 if characters look wrong"))
    return text, caption_path, encoding


def _scan_concept(folder: Path, repeats: int, name: str, ext: str, issues: list[ScanIssue],
                  walked: list[int]) -> Concept:
    concept = Concept(name=name, repeats=repeats, folder=folder)
    image_exts = image_extensions()
    for path in list_folder(folder):
        count_entry(walked, folder)
        if _is_ignored(path):
            continue
        suffix = path.suffix.lower()
        special = special_file_reason(path)
        if special:
            issues.append(ScanIssue("special_file", path, f"Not used: {special}",
                                    "Remove it from the dataset folder"))
            continue
        if path.is_dir():
            issues.append(ScanIssue("subfolder_ignored", path, "Subfolder inside a concept folder is not used",
                                    "Move its images up into the concept folder, or make it its own "
                                    "<repeats>_<name> folder beside the others"))
            continue
        if suffix == ext.lower() or suffix in _SIDECAR_SUFFIXES:
            continue
        if suffix not in image_exts:
            issues.append(ScanIssue("not_an_image", path, "File is not an image and is ignored",
                                    "Remove it, or convert it to PNG/JPEG if it should be trained on"))
            continue
        try:
            header = read_header(path)
        except ImageReadError as e:
            issues.append(ScanIssue("unreadable_image", path, e.reason, "Re-export or remove this file"))
            continue
        caption, caption_path, encoding = _read_caption(path, ext, issues)
        concept.items.append(ImageItem(path, caption, header.size, caption_path, encoding,
                                       header.format, header.mode, header.n_frames))
    return concept


def _check_root(root: Path, is_reg: bool) -> None:
    label = "regularization folder" if is_reg else "training folder"
    if not root.exists():
        raise DatasetError(f"The {label} does not exist", where=str(root),
                           fix="Check the path; it must be the parent of the <repeats>_<name> folders")
    if not root.is_dir():
        raise DatasetError(f"The {label} is a file, not a folder", where=str(root),
                           fix="Give the folder that holds the <repeats>_<name> concept folders")


def _no_concepts_error(root: Path, is_reg: bool, skipped: list[Path]) -> DatasetError:
    image_exts = image_extensions()
    has_images = any(p.suffix.lower() in image_exts for p in root.iterdir() if p.is_file())
    own = parse_concept_folder_name(root.name)
    if has_images or own:
        example = f"10_{own[1] if own else root.name}"
        return DatasetError(
            "This folder holds the images itself: it looks like a concept folder, not the dataset folder",
            where=str(root),
            fix=f"Point at its parent folder ({root.parent}) instead; the images belong in a subfolder "
                f"named <repeats>_<name>, e.g. {example}")
    if skipped:
        names = ", ".join(p.name for p in skipped[:5])
        return DatasetError(f"No folder here is named <repeats>_<name> (found: {names})", where=str(root),
                            fix=f"Rename each concept folder with its repeat count first, e.g. 10_{skipped[0].name}")
    kind = "regularization" if is_reg else "training"
    return DatasetError(f"The {kind} folder has no concept folders", where=str(root),
                        fix="Put the images in subfolders named <repeats>_<name>, e.g. 10_mychar")


def scan_dataset(train_dir: str | os.PathLike, caption_extension: str = ".txt", is_reg: bool = False) -> Dataset:
    """Read the concept folders under `train_dir` (headers and captions only).

    Raises DatasetError when the folder is missing or holds no usable concept folder;
    everything else becomes an entry in `Dataset.issues` / `Dataset.problems`.
    """
    root = Path(train_dir).expanduser()
    _check_root(root, is_reg)
    ext = normalize_extension(caption_extension)
    dataset = Dataset(root=root, concepts=[], is_reg=is_reg, caption_extension=ext)
    skipped: list[Path] = []
    walked = [0]
    for folder in list_folder(root):
        count_entry(walked, root)
        if _is_ignored(folder) or not folder.is_dir():
            continue
        parsed = parse_concept_folder_name(folder.name)
        if parsed is None or parsed[0] < 1:
            skipped.append(folder)
            what = ("Folder has repeats 0, so it would never be trained" if parsed
                    else "Folder name does not start with <repeats>_, so it is skipped")
            dataset.issues.append(ScanIssue("bad_folder_name", folder, what,
                                            f"Rename it like 10_{parsed[1] if parsed else folder.name}"))
            continue
        check_repeats(parsed[0], folder)
        dataset.concepts.append(_scan_concept(folder, parsed[0], parsed[1], ext, dataset.issues, walked))
    if not dataset.concepts:
        raise _no_concepts_error(root, is_reg, skipped)
    if not dataset.items:
        found = "; ".join(f"{shown(issue.path.name)}: {issue.what}" for issue in dataset.issues[:3])
        raise DatasetError("The concept folders hold no readable images" + (f" ({found})" if found else ""),
                           where=str(root),
                           fix="Add PNG/JPEG/WebP images to the <repeats>_<name> folders; "
                               "see the problems listed by `python -m lib_lora check`")
    return dataset
