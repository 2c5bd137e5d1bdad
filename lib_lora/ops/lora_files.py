"""LoRA file in/out for the ops.

Reading and writing go through the networks package (`load_network_file`,
`save_network_file`: atomic writes, sshs hashes, sd-scripts/LyCORIS readers)
when it provides them; until then a plain safetensors fallback keeps the ops
usable. The metadata the outputs carry comes from networks/metadata.py
(`tool_metadata`), plus our settings and error summary under `lib_lora_*` keys.
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import fileio
from ..errors import NetworkFileError
from ..precisions import precision_dtype


def load_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a LoRA/LyCORIS file (ours, sd-scripts', LyCORIS')."""
    path = Path(path)
    if not path.is_file():
        raise NetworkFileError("LoRA file not found", where=str(path), fix="Check the path")
    try:
        from ..networks import load_network_file  # the shared reader once the networks package has it
    except ImportError:
        load_network_file = None
    if load_network_file is not None:
        return load_network_file(path)
    if path.suffix.lower() != ".safetensors":
        raise NetworkFileError("Only .safetensors LoRA files can be read here", where=str(path),
                               fix="Convert the file to .safetensors")
    from safetensors import safe_open
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except Exception as e:
        raise NetworkFileError(f"The LoRA file cannot be read: {e}", where=str(path),
                               fix="The file is damaged or incomplete; download or save it again") from None


def save_lora_file(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str],
                   precision: str) -> Path:
    """Write a LoRA file atomically; float tensors in `precision` (fp16/bf16/fp32)."""
    try:
        from ..networks import save_network_file
    except ImportError:
        save_network_file = None
    if save_network_file is not None:
        save_network_file(path, tensors, metadata, precision)
        return Path(path)
    from safetensors.torch import save_file
    dtype = precision_dtype(precision)
    out = {k: (v.to(dtype) if v.is_floating_point() else v).contiguous() for k, v in tensors.items()}
    meta = {str(k): str(v) for k, v in metadata.items()}
    return fileio.write_with(path, lambda tmp: save_file(out, str(tmp), metadata=meta))
