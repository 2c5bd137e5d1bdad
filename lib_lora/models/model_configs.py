"""The diffusers config folders we ship for single-file checkpoints, made loadable offline.

lib_lora/models/configs/<name>/ holds the public diffusers configs of runwayml
SD1.5 (sd15), stabilityai SD2.1-base (sd21_base), SD2.1 768-v (sd21_v) and SDXL
base 1.0 (sdxl_base), written by us as data: model_index.json and the config of
each part, tokenizer_config.json included (SD2 and SDXL's second tokenizer pad
with "!", as OpenCLIP does). The tokenizers' vocab.json/merges.txt are not shipped:
they are built from the CLIP BPE file we already find at run time
(models/tiny.find_bpe_file). The complete folder is assembled once in a cache
folder under a name that hashes its inputs, in a temporary folder renamed into
place, so a crash or a second process never sees half a folder.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path

from .. import fileio
from ..cache_folders import cache_folder
from ..errors import LoraError, ModelError
from .tiny import find_bpe_file, tokenizer_vocab_files

SHIPPED = Path(__file__).resolve().parent / "configs"
CACHE_ENV = "LIB_LORA_MODEL_CONFIG_CACHE"
VOCAB_FILES = ("vocab.json", "merges.txt")


def shipped_names() -> list[str]:
    return sorted(p.name for p in SHIPPED.iterdir() if (p / "model_index.json").is_file())


def cache_root() -> Path:
    """Where assembled folders live: $LIB_LORA_MODEL_CONFIG_CACHE, else the extension's .cache/,
    else (a read-only install) the system temp folder."""
    try:
        return cache_folder("model_configs", CACHE_ENV)
    except LoraError as e:
        raise ModelError(e.what, where=e.where, fix=e.fix) from None


def _digest(source: Path, bpe: Path) -> str:
    h = hashlib.sha1()
    for file in sorted(source.rglob("*.json")):
        h.update(file.relative_to(source).as_posix().encode())
        h.update(file.read_bytes())
    h.update(f"{bpe.name}:{bpe.stat().st_size}".encode())
    return h.hexdigest()[:12]


def materialise_config(name: str, bpe_path: str | Path | None = None) -> Path:
    """The complete, loadable diffusers config folder (no weights) of the shipped config `name`."""
    source = SHIPPED / name
    if not (source / "model_index.json").is_file():
        raise ModelError(f"No shipped model config named {name!r}", where=str(SHIPPED),
                         fix=f"Use one of: {', '.join(shipped_names())}")
    bpe = Path(bpe_path or find_bpe_file())
    target = cache_root() / f"{name}-{_digest(source, bpe)}"
    if (target / "model_index.json").is_file():
        return target
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _assemble(source, staging, bpe)
        try:
            os.replace(staging, target)   # the whole folder appears at once
        except OSError:
            if not (target / "model_index.json").is_file():   # not a concurrent process that won the race
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _assemble(source: Path, dest: Path, bpe: Path) -> None:
    for file in source.rglob("*.json"):
        fileio.write_bytes(dest / file.relative_to(source), file.read_bytes())
    vocab = Path(tokenizer_vocab_files(str(bpe)))
    for tokenizer_dir in (p.parent for p in dest.glob("tokenizer*/tokenizer_config.json")):
        for name in VOCAB_FILES:
            fileio.write_bytes(tokenizer_dir / name, (vocab / name).read_bytes())
