"""The precisions LoRA and checkpoint files are saved in: the names a user picks and the torch
dtype each name stands for.

One table for every writer (trained LoRAs, the tools' LoRAs, merged checkpoints) and one tuple
for every `precision`/`save_precision` option's choices. torch is imported inside `precision_dtype`
only: config.py takes SAVE_PRECISIONS from here and stays free of torch, so commands that never
touch a tensor (`check`, `--help`) do not pay for loading it.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

SAVE_PRECISIONS = ("fp16", "bf16", "fp32")


def precision_dtype(precision: str) -> torch.dtype:
    """The dtype floating-point tensors are written in at `precision` (one of SAVE_PRECISIONS)."""
    import torch

    return {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}[precision]
