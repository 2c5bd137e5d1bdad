"""Finding a WD1.4 tagger's files: a local folder, a folder under the models dir,
or a download from the Hugging Face hub into the models dir on first use.

A model is two files, `model.onnx` and `selected_tags.csv`. Offline, the error
names the repo, the two files and the folder to put them in, so the user can
copy them over by hand.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import OfflineError, TaggerError

MODEL_FILE, TAGS_FILE = "model.onnx", "selected_tags.csv"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


@dataclass(frozen=True)
class ModelFiles:
    name: str          # repo id or folder name, for messages
    onnx_path: Path
    tags_path: Path


def default_models_dir() -> Path:
    """Headless default; inside the WebUI the adapter passes models/wd14_tagger."""
    return Path(os.environ.get("LIB_LORA_TAGGER_DIR", Path.home() / ".cache" / "lib_lora" / "wd14_tagger"))


def repo_folder(models_dir: Path, repo_id: str) -> Path:
    """models_dir/<owner>_<name>: one flat folder per repo, easy to fill by hand."""
    return models_dir / repo_id.replace("/", "_")


def _files_in(folder: Path, name: str) -> ModelFiles | None:
    onnx, tags = folder / MODEL_FILE, folder / TAGS_FILE
    return ModelFiles(name, onnx, tags) if onnx.is_file() and tags.is_file() else None


def _local_folder(folder: Path) -> ModelFiles:
    found = _files_in(folder, folder.name)
    if found:
        return found
    missing = [f for f in (MODEL_FILE, TAGS_FILE) if not (folder / f).is_file()]
    raise TaggerError(f"The tagger folder lacks {' and '.join(missing)}", where=str(folder),
                      fix="Put model.onnx and selected_tags.csv of a WD1.4 tagger (e.g. from "
                          "https://huggingface.co/SmilingWolf/wd-v1-4-convnext-tagger-v2) in that folder")


def _offline_error(repo_id: str, target: Path, reason: str) -> OfflineError:
    return OfflineError(
        f"Cannot download the tagger model {repo_id} from the Hugging Face hub ({reason})",
        where=f"https://huggingface.co/{repo_id}",
        fix=f"Connect to the internet and retry, or download {MODEL_FILE} and {TAGS_FILE} from that page "
            f"into {target} (or give a local folder holding them as the tagger model)")


def _download(repo_id: str, target: Path) -> ModelFiles:
    try:
        import huggingface_hub
        from huggingface_hub import errors as hf_errors
    except ImportError:
        raise TaggerError("huggingface_hub is not installed, so the tagger cannot be downloaded",
                          where=repo_id, fix=f"pip install huggingface_hub, or put {MODEL_FILE} and {TAGS_FILE} "
                                             f"into {target}") from None
    paths = {}
    for filename in (MODEL_FILE, TAGS_FILE):
        try:
            # Looked up at call time so tests can stand in for the hub.
            paths[filename] = Path(huggingface_hub.hf_hub_download(repo_id, filename, local_dir=target))
        except hf_errors.LocalEntryNotFoundError:
            raise _offline_error(repo_id, target, "no connection, or offline mode is on") from None
        except (hf_errors.RepositoryNotFoundError, hf_errors.EntryNotFoundError,
                hf_errors.RevisionNotFoundError) as e:
            raise TaggerError(f"The hub has no {filename} for {repo_id} ({type(e).__name__})", where=repo_id,
                              fix="Check the model name; WD1.4 taggers are e.g. SmilingWolf/wd-v1-4-convnext-"
                                  "tagger-v2 or SmilingWolf/wd-vit-tagger-v3") from None
        except (ConnectionError, TimeoutError, OSError) as e:
            raise _offline_error(repo_id, target, type(e).__name__) from None
        except Exception as e:  # requests' errors are not OSError subclasses in every version
            if "Connection" in type(e).__name__ or "Timeout" in type(e).__name__:
                raise _offline_error(repo_id, target, type(e).__name__) from None
            raise
    return ModelFiles(repo_id, paths[MODEL_FILE], paths[TAGS_FILE])


def resolve_model(spec: str, models_dir: str | os.PathLike | None = None) -> ModelFiles:
    """`spec` is a folder with the two files, or a hub repo id such as SmilingWolf/wd-vit-tagger-v3."""
    spec = spec.strip()
    folder = Path(spec).expanduser()
    if folder.is_dir():
        return _local_folder(folder)
    if not _REPO_ID.match(spec):
        raise TaggerError("The tagger model is neither an existing folder nor a Hugging Face repo id",
                          where=spec, fix="Give a folder holding model.onnx + selected_tags.csv, or a repo id "
                                          "like SmilingWolf/wd-v1-4-convnext-tagger-v2")
    base = Path(models_dir).expanduser() if models_dir else default_models_dir()
    if base.exists() and not base.is_dir():     # else it reads as a failed download, "connect to the internet"
        raise TaggerError("The tagger models folder is a file, not a folder", where=str(base),
                          fix="Give --models-dir a folder (it is created when missing)")
    target = repo_folder(base, spec)
    return _files_in(target, spec) or _download(spec, target)
