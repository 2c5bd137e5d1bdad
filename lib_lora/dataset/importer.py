"""Bringing uploaded images into a dataset folder under the datasets root.

Sources may be image and caption files, whole folders and zips, mixed. They are
first gathered into a private staging folder (zips through safe_zip, folders
without following links), then laid out as
`<root>/<name>/train/<repeats>_<concept>/` (or `.../reg/` for regularization
images). Folders already named `<repeats>_<name>` in the upload keep their
name; everything else goes into the concept folder given. Sources are only
read, never moved or changed: every write passes a WriteGuard that allows only
the dataset's own folder and protects the sources. FIFOs, sockets and devices
are skipped with a reason, and when nothing can be imported the reasons met on
the way (an encrypted or damaged zip, a file over the size limit) are the message.
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
from ..safe_paths import WriteGuard, check_write, guarded, shown
from .file_kinds import special_file_reason
from .images import image_extensions
from .input_limits import count_entry, normalize_extension
from .safe_zip import ExtractLimits, extract_zip
from .scan import parse_concept_folder_name

_UNSAFE_CHARS = re.compile(r'[\x00-\x1f<>:"/\\|?*]')
# Room for '_<n>', the extension and the atomic write's temp name within the 255-byte name limit.
_STEM_MAX_BYTES = 180


@dataclass
class ImportResult:
    train_dir: Path
    concept_dirs: list[Path] = field(default_factory=list)
    imported: list[Path] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)   # (source, reason)


def safe_name(name: str) -> str:
    """A folder/file name that is valid on every OS; any Unicode letters are kept."""
    cleaned = _UNSAFE_CHARS.sub("_", name).strip().strip(".")
    while len(os.fsencode(cleaned)) > _STEM_MAX_BYTES:
        cleaned = cleaned[:-1]
    return cleaned or "dataset"


def _wanted(caption_ext: str):
    exts = image_extensions() | {caption_ext.lower()}
    return lambda rel: PurePosixPath(rel).suffix.lower() in exts and not PurePosixPath(rel).name.startswith(".")


def _stage_file(path: Path, target: Path, limits: ExtractLimits, result: ImportResult) -> bool:
    """Copy one regular file into staging; False (with the reason recorded) when it is skipped."""
    reason = special_file_reason(path)
    if not reason and path.stat().st_size > limits.max_file_bytes:
        reason = f"larger than {limits.max_file_bytes >> 20} MiB"
    if reason:
        result.skipped.append((shown(path), reason))
        return False
    write_bytes(target, path.read_bytes())
    return True


def _stage_folder(folder: Path, staging: Path, wanted, limits: ExtractLimits, result: ImportResult) -> None:
    count, total, walked = 0, 0, [0]
    for dirpath, dirnames, filenames in os.walk(folder):   # followlinks=False: linked folders are not entered
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink() and not d.startswith(".")]
        for name in filenames:
            count_entry(walked, folder)
            path = Path(dirpath) / name
            rel = path.relative_to(folder.parent)
            if path.is_symlink():
                result.skipped.append((shown(path), "symbolic link (not followed)"))
                continue
            if not wanted(rel.as_posix()):
                result.skipped.append((shown(path), "not an image or caption"))
                continue
            count, total = count + 1, total + path.stat().st_size
            if count > limits.max_files or total > limits.max_total_bytes:
                raise DatasetError("The upload is larger than allowed", where=str(folder),
                                   fix=f"Upload at most {limits.max_files} files and "
                                       f"{limits.max_total_bytes >> 20} MiB, or give the folder's server path")
            _stage_file(path, staging / rel, limits, result)


def _stage_source(source: Path, staging: Path, wanted, limits: ExtractLimits, result: ImportResult) -> None:
    if source.is_symlink():
        result.skipped.append((shown(source), "symbolic link (not followed)"))
    elif source.is_dir():
        _stage_folder(source, staging, wanted, limits, result)
    elif not source.exists():
        raise DatasetError("An uploaded file is missing", where=str(source), fix="Upload it again")
    elif special_file_reason(source):
        result.skipped.append((shown(source), special_file_reason(source)))
    elif source.suffix.lower() == ".zip":
        extracted = extract_zip(source, staging / safe_name(source.stem), wanted, limits)
        result.skipped += [(f"{shown(source.name)}:{name}", why) for name, why in extracted.skipped]
    elif wanted(source.name):
        _stage_file(source, staging / safe_name(source.name), limits, result)
    else:
        result.skipped.append((shown(source), "not an image, caption or zip"))


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
        os.replace(path, check_write(folder / (stem + path.suffix)))
        result.imported.append(folder / (stem + path.suffix))
        caption = path.with_suffix(caption_ext)
        if caption.is_file():
            os.replace(caption, check_write(folder / (stem + caption_ext)))
        if folder not in result.concept_dirs:
            result.concept_dirs.append(folder)


def _check_root(datasets_root: Path) -> None:
    if datasets_root.exists() and not datasets_root.is_dir():
        raise DatasetError("The datasets root is a file, not a folder", where=str(datasets_root),
                           fix="Give the folder that holds (or will hold) the datasets")


def _nothing_imported(sources: list, result: ImportResult) -> DatasetError:
    """'holds no images' with the reasons met on the way (encrypted, damaged, too large), when there are any."""
    where = ", ".join(shown(s) for s in sources)[:200]
    if not result.skipped:
        return DatasetError("The upload holds no images", where=where,
                            fix="Upload PNG/JPEG/WebP images, a folder of them, or a zip")
    reasons = "; ".join(f"{name}: {why}" for name, why in result.skipped[:5])
    more = f" and {len(result.skipped) - 5} more" if len(result.skipped) > 5 else ""
    return DatasetError(f"The upload holds no images that could be imported ({reasons}{more})", where=where,
                        fix="Fix or replace those files (re-create a damaged or encrypted zip without a password), "
                            "then upload again")


def import_dataset(sources: list[str | os.PathLike], datasets_root: str | os.PathLike, name: str,
                   concept: str = "", repeats: int = 10, is_reg: bool = False, caption_extension: str = ".txt",
                   limits: ExtractLimits = ExtractLimits(),
                   progress: Callable[[int, int, str], None] | None = None) -> ImportResult:
    """Copy `sources` into `<datasets_root>/<name>/(train|reg)/<repeats>_<concept>/`.

    progress(done, total, source) after each source; it may raise to stop (nothing is laid out then)."""
    if repeats < 1:
        raise DatasetError(f"Repeats must be at least 1, not {repeats}", where="import",
                           fix="Use 5-10 for most datasets")
    ext = normalize_extension(caption_extension)
    _check_root(Path(datasets_root))
    dataset_dir = Path(datasets_root) / safe_name(name)
    target_root = dataset_dir / ("reg" if is_reg else "train")
    result = ImportResult(train_dir=target_root)
    guard = WriteGuard([dataset_dir], protected_trees=[s for s in map(Path, sources) if s.is_dir()],
                       protected=[s for s in map(Path, sources) if not s.is_dir()], purpose="import")
    with guarded(guard):
        _import_into(sources, dataset_dir, target_root, f"{repeats}_{safe_name(concept or name)}", ext, limits,
                     progress, result)
    if not result.imported:
        raise _nothing_imported(sources, result)
    return result


def _import_into(sources, dataset_dir: Path, target_root: Path, default_folder: str, ext: str,
                 limits: ExtractLimits, progress, result: ImportResult) -> None:
    try:
        dataset_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=dataset_dir))
    except OSError as e:
        from ..fileio import write_error
        raise write_error(e, dataset_dir) from None
    try:
        for done, source in enumerate(sources, start=1):
            _stage_source(Path(source), staging, _wanted(ext), limits, result)
            if progress:
                progress(done, len(sources), str(source))
        _lay_out(staging, target_root, default_folder, ext, result)
    finally:
        shutil.rmtree(staging, ignore_errors=True)   # our own staging folder only
