"""LoRA files in and out for the tools (extract, merge, resize).

The networks package reads and writes them (`load_network_file`, `save_network_file`:
atomic writes, sshs hashes, sd-scripts/LyCORIS/PEFT names), so a LoRA the tools write is
written exactly as a trained one; the metadata comes from networks/metadata.py
(`tool_metadata`), plus our settings and error summary under `lib_lora_*` keys. This module
only adds the tools' one message for an input that is not there.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import NetworkFileError
from ..networks import load_network_file, save_network_file

save_lora_file = save_network_file


def load_lora_file(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a LoRA/LyCORIS file (ours, sd-scripts', LyCORIS')."""
    path = Path(path)
    if not path.is_file():
        raise NetworkFileError("LoRA file not found", where=str(path), fix="Check the path")
    return load_network_file(path)
