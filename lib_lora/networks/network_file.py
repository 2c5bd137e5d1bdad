"""LoRA/LyCORIS files: safetensors with sd-scripts' metadata and hashes; reading sd-scripts',
LyCORIS' and our own files (and legacy .pt/.ckpt through torch.load(weights_only=True)).

sshs_model_hash / sshs_legacy_hash are computed exactly as sd-scripts'
train_util.precalculate_safetensors_hashes: the tensors are serialised with only
the `ss_*` metadata (so later user edits to other fields do not change the hash);
model hash = sha256 of the bytes after the header (what the WebUI's addnet hash
reads), legacy hash = first 8 hex digits of sha256(bytes[0x100000:0x110000]).
"""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import torch

from ..errors import NetworkFileError
from ..fileio import write_bytes
from ..precisions import SAVE_PRECISIONS, precision_dtype

KEY_PREFIXES = ("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_")
# Weight parts the WebUI v1.10.1 loader knows (webui-api.md 2.3), plus PEFT's names it accepts.
KNOWN_PARTS = re.compile(
    r"^(lora_(up|down|mid)\.weight|lora_[AB]\.weight|alpha|scale|bias|dora_scale"
    r"|hada_(w[12]_[ab]|t[12])|lokr_(w1|w2|w1_[ab]|w2_[ab]|t2)|diff|diff_b|w_norm|b_norm|on_input|weight"
    r"|[ab][12]\.weight|oft_blocks|oft_diag|rescale)$")
# PEFT (diffusers) weight names -> sd-scripts names: lora_A is the down (r, in) factor, lora_B the up (out, r).
PEFT_TO_KOHYA = {"lora_A.weight": "lora_down.weight", "lora_B.weight": "lora_up.weight"}


def sd_scripts_hashes(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> tuple[str, str]:
    """(sshs_model_hash, sshs_legacy_hash) as sd-scripts computes them."""
    from safetensors.torch import save

    data = save(tensors, {k: v for k, v in metadata.items() if k.startswith("ss_")})
    header_len = int.from_bytes(data[:8], "little")
    model_hash = hashlib.sha256(data[8 + header_len:]).hexdigest()
    legacy_hash = hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    return model_hash, legacy_hash


def save_network_file(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                      precision: str = "fp16") -> Path:
    """Write `tensors` (file keys) at `precision` with `metadata` + sshs hashes, atomically.

    Returns the path written. Raises NetworkFileError for a bad precision, a non-string
    metadata value or a path that is not .safetensors."""
    path = Path(path)
    if path.suffix.lower() != ".safetensors":
        raise NetworkFileError("LoRA files are written as .safetensors only", where=str(path),
                               fix="Give the output file the .safetensors extension")
    if precision not in SAVE_PRECISIONS:
        raise NetworkFileError(f"Unknown save precision {precision!r}", where=str(path),
                               fix=f"Use one of {', '.join(SAVE_PRECISIONS)}")
    bad = [k for k, v in metadata.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise NetworkFileError(f"Metadata values must be strings; not so for {bad[:5]}", where=str(path),
                               fix="Pass metadata through build_metadata(), which stringifies every value")
    dtype = precision_dtype(precision)
    cast = {k: v.detach().to("cpu", dtype).contiguous() for k, v in tensors.items()}
    full = {k: v for k, v in metadata.items() if k not in ("sshs_model_hash", "sshs_legacy_hash")}
    full["sshs_model_hash"], full["sshs_legacy_hash"] = sd_scripts_hashes(cast, full)
    from safetensors.torch import save

    return write_bytes(path, save(cast, full))


def load_network_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a LoRA/LyCORIS file -> (tensors by file key, metadata). PEFT lora_A/lora_B become
    lora_down/lora_up. Raises NetworkFileError for missing, corrupt or foreign files."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, FIFO or device, not a file" if path.exists() else "does not exist"
        raise NetworkFileError(f"The LoRA file {what}", where=str(path), fix="Check the path")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        tensors, metadata = _read_safetensors(path)
    elif suffix in (".pt", ".ckpt", ".pth"):
        tensors, metadata = _read_torch(path), {}
    else:
        raise NetworkFileError(f"Unsupported LoRA file type {suffix or '(none)'}", where=str(path),
                               fix="Use a .safetensors file (or a legacy .pt/.ckpt)")
    return _normalise_keys(tensors, path), metadata


def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file, safe_open

    try:
        if _undecodable(path):      # safetensors opens only UTF-8 paths: read the bytes through Python instead
            return _read_safetensors_bytes(path.read_bytes())
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
        return load_file(str(path)), metadata
    except (SafetensorError, OSError, ValueError) as err:
        raise NetworkFileError(f"The file is not a readable safetensors file ({err})", where=str(path),
                               fix="The file is damaged or incomplete: download or train it again") from None


def _undecodable(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
        return False
    except UnicodeEncodeError:
        return True


def _read_safetensors_bytes(data: bytes) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    import json
    import struct

    from safetensors.torch import load

    tensors = load(data)        # checks the header and sizes; raises SafetensorError on damage
    (size,) = struct.unpack("<Q", data[:8])
    return tensors, dict(json.loads(data[8:8 + size]).get("__metadata__") or {})


def _read_torch(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types here; all mean 'not a safe tensor file'
        reason = str(err).split("\n")[0].split(". ")[0][:160]      # torch's own text runs to paragraphs
        raise NetworkFileError(f"The file cannot be read as plain tensors ({type(err).__name__}: {reason})",
                               where=str(path),
                               fix="Only tensor-only .pt/.ckpt files are read (no pickled code); "
                                   "convert it to .safetensors") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = data["state_dict"]
    if not isinstance(data, dict) or not all(isinstance(v, torch.Tensor) for v in data.values()):
        raise NetworkFileError("The file does not hold a flat dict of tensors", where=str(path),
                               fix="Use a LoRA file saved by sd-scripts, LyCORIS or this extension")
    return data


def _normalise_keys(tensors: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    out, unknown = {}, []
    for key, tensor in tensors.items():
        if key.startswith("bundle_emb."):  # textual-inversion embeddings bundled with the LoRA
            out[key] = tensor
            continue
        module, _, part = key.partition(".")
        if not module.startswith(KEY_PREFIXES) or not KNOWN_PARTS.match(part):
            unknown.append(key)
            continue
        out[f"{module}.{PEFT_TO_KOHYA.get(part, part)}"] = tensor
    if unknown:
        raise NetworkFileError(
            f"{len(unknown)} of {len(tensors)} tensors are not LoRA keys (e.g. {unknown[:3]})", where=str(path),
            fix="This is not a kohya/LyCORIS LoRA file (a checkpoint, an embedding or a diffusers/PEFT "
                "file?); convert it to sd-scripts keys (lora_unet_..., lora_te_...) first")
    if not out:
        raise NetworkFileError("The file holds no tensors", where=str(path), fix="Train or download it again")
    return out
