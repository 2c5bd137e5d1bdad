"""Bringing uploaded images into a dataset folder under the datasets root.

Sources may be image and caption files, whole folders and zips, mixed. They are
first gathered into a private staging folder (zips through safe_zip, folders
without following links), then laid out as
`<root>/<name>/train/<repeats>_<concept>/` (or `.../reg/` for regularization
images). Folders already named `<repeats>_<name>` in the upload keep their
name; everything else goes into the concept folder given. Sources are only
read, never moved or changed.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable

from ..errors import DatasetError
from ..fileio import write_bytes
from .images import image_extensions
from .safe_zip import ExtractLimits, extract_zip
from .scan import normalize_extension, parse_concept_folder_name

_UNSAFE_CHARS = re.compile(r'[\x00-\x1f<>:"/\\|?*]')


@dataclass
class ImportResult:
    train_dir: Path
    concept_dirs: list[Path] = field(default_factory=list)
    imported: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (source, reason)


def safe_name(name: str) -> str:
    """A folder/file name that is valid on every OS; any Unicode letters are kept."""
    cleaned = _UNSAFE_CHARS.sub("_", name).strip().strip(".")
    return cleaned or "dataset"


def _wanted(caption_ext: str):
    exts = image_extensions() | {caption_ext.lower()}
    return lambda rel: PurePosixPath(rel).suffix.lower() in exts and not PurePosixPath(rel).name.startswith(".")


def _stage_folder(folder: Path, staging: Path, wanted, limits: ExtractLimits, result: ImportResult) -> None:
    count, total = 0, 0
    for dirpath, dirnames, filenames in os.walk(folder):   # followlinks=False: linked folders are not entered
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink() and not d.startswith(".")]
        for name in filenames:
            path = Path(dirpath) / name
            rel = path.relative_to(folder.parent)
            if path.is_symlink():
                result.skipped.append((str(path), "symbolic link (not followed)"))
                continue
            if not wanted(rel.as_posix()):
                result.skipped.append((str(path), "not an image or caption"))
                continue
            count, total = count + 1, total + path.stat().st_size
            if count > limits.max_files or total > limits.max_total_bytes:
                raise DatasetError("The upload is larger than allowed", where=str(folder),
                                   fix=f"Upload at most {limits.max_files} files and "
                                       f"{limits.max_total_bytes >> 20} MiB, or give the folder's server path")
            write_bytes(staging / rel, path.read_bytes())


def _stage_source(source: Path, staging: Path, wanted, limits: ExtractLimits, result: ImportResult) -> None:
    if source.is_symlink():
        result.skipped.append((str(source), "symbolic link (not followed)"))
    elif source.is_dir():
        _stage_folder(source, staging, wanted, limits, result)
    elif source.suffix.lower() == ".zip":
        extracted = extract_zip(source, staging / safe_name(source.stem), wanted, limits)
        result.skipped += [(f"{source.name}:{name}", why) for name, why in extracted.skipped]
    elif source.is_file() and wanted(source.name):
        write_bytes(staging / safe_name(source.name), source.read_bytes())
    elif not source.exists():
        raise DatasetError("An uploaded file is missing", where=str(source), fix="Upload it again")
    else:
        result.skipped.append((str(source), "not an image, caption or zip"))


def _concept_of(rel: Path, default_folder: str) -> str:
    for part in rel.parts[:-1][::-1]:
        parsed = parse_concept_folder_name(part)
        if parsed and parsed[0] >= 1:
            return safe_name(part)
    return default_folder


def _free_stem(folder: Path, stem: str, suffix: str, taken: set[str]) -> str:
    candidate, n = stem, 1
    while candidate.lower() in taken or (folder / (candidate + suffix)).exists():
        candidate, n = f"{stem}_{n}", n + 1
    taken.add(candidate.lower())
    return candidate


def _lay_out(staging: Path, target_root: Path, default_folder: str, caption_ext: str, result: ImportResult) -> None:
    image_exts = image_extensions()
    taken: dict[Path, set[str]] = {}
    for path in sorted(p for p in staging.rglob("*") if p.is_file() and p.suffix.lower() in image_exts):
        folder = target_root / _concept_of(path.relative_to(staging), default_folder)
        folder.mkdir(parents=True, exist_ok=True)
        stem = _free_stem(folder, safe_name(path.stem), path.suffix, taken.setdefault(folder, set()))
        os.replace(path, folder / (stem + path.suffix))
        result.imported.append(folder / (stem + path.suffix))
        caption = path.with_suffix(caption_ext)
        if caption.is_file():
            os.replace(caption, folder / (stem + caption_ext))
        if folder not in result.concept_dirs:
            result.concept_dirs.append(folder)


def import_dataset(sources: list[str | os.PathLike], datasets_root: str | os.PathLike, name: str,
                   concept: str = "", repeats: int = 10, is_reg: bool = False, caption_extension: str = ".txt",
                   limits: ExtractLimits = ExtractLimits(),
                   progress: Callable[[int, int, str], None] | None = None) -> ImportResult:
    """Copy `sources` into `<datasets_root>/<name>/(train|reg)/<repeats>_<concept>/`.

    progress(done, total, source) after each source; it may raise to stop (nothing is laid out then)."""
    if repeats < 1:
        raise DatasetError(f"Repeats must be at least 1, not {repeats}", where="import",
                           fix="Use 5-10 for most datasets")
    dataset_dir = Path(datasets_root) / safe_name(name)
    target_root = dataset_dir / ("reg" if is_reg else "train")
    ext = normalize_extension(caption_extension)
    result = ImportResult(train_dir=target_root)
    dataset_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=dataset_dir))
    try:
        for done, source in enumerate(sources, start=1):
            _stage_source(Path(source), staging, _wanted(ext), limits, result)
            if progress:
                progress(done, len(sources), str(source))
        _lay_out(staging, target_root, f"{repeats}_{safe_name(concept or name)}", ext, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # our own staging folder only
    if not result.imported:
        raise DatasetError("The upload holds no images", where=", ".join(str(s) for s in sources)[:200],
                           fix="Upload PNG/JPEG/WebP images, a folder of them, or a zip")
    return result
