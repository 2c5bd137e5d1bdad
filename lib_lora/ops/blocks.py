"""Block-weight vectors: one weight per UNet block (and BASE for the text encoders), as block-weight tools use.

Accepted lengths and the blocks they name, in order:
  17  BASE, IN01, IN02, IN04, IN05, IN07, IN08, MID, OUT03..OUT11   (SD1/SD2 blocks that hold attention)
  26  BASE, IN00..IN11, MID, OUT00..OUT11                           (every block, for LoCon)
  12  BASE, IN04, IN05, IN07, IN08, MID, OUT00..OUT05               (SDXL blocks that hold attention)
  20  BASE, IN00..IN08, MID, OUT00..OUT08                           (every SDXL block)
A layer's block comes from its LoRA key through its ldm name (input_blocks.N ->
INnn, middle_block -> MID, output_blocks.N -> OUTnn, text encoders -> BASE).
Layers in a block the vector does not name, and UNet layers outside the blocks
(time embedding, conv_in/out), keep weight 1.0: a 17-value vector is meant for
attention-only LoRAs, so use 26 values to steer LoCon layers.
"""
from __future__ import annotations

import math
import re

from ..errors import LoraError
from ..networks.keys import file_key_to_module_name

_INS = [f"IN{i:02d}" for i in range(12)]
_OUTS = [f"OUT{i:02d}" for i in range(12)]
BLOCK_NAMES = {
    17: ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "MID"] + _OUTS[3:],
    26: ["BASE"] + _INS + ["MID"] + _OUTS,
    12: ["BASE", "IN04", "IN05", "IN07", "IN08", "MID"] + _OUTS[:6],
    20: ["BASE"] + _INS[:9] + ["MID"] + _OUTS[:9],
}


def parse_block_weights(text: str, where: str = "block weights") -> dict[str, float]:
    """'1,0,0.5,...' -> {block name: weight}; the number of values picks the layout."""
    try:
        values = [float(v) for v in re.split(r"[,\s]+", text.strip()) if v]
    except ValueError:
        raise LoraError(f"Block weights {text!r} are not all numbers", where=where,
                        fix="Write comma-separated numbers, e.g. 1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1") from None
    if not all(math.isfinite(v) for v in values):
        raise LoraError(f"Block weights {text!r} hold nan or inf", where=where,
                        fix="Write finite numbers, e.g. 1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1")
    names = BLOCK_NAMES.get(len(values))
    if names is None:
        raise LoraError(f"{len(values)} block weights were given", where=where,
                        fix="Give 17 or 26 values (SD1/SD2), or 12 or 20 (SDXL), starting with BASE")
    return dict(zip(names, values))


def block_of(lora_key: str) -> str:
    """The block a LoRA module key belongs to: 'BASE', 'INnn', 'MID', 'OUTnn', or '' (outside the blocks)."""
    if lora_key.startswith(("lora_te_", "lora_te1_", "lora_te2_")):
        return "BASE"
    name = file_key_to_module_name(lora_key, "ldm") or ""
    match = re.match(r"(input_blocks|middle_block|output_blocks)\.(\d+)", name)
    if match is None:
        return ""
    kind, index = match.group(1), int(match.group(2))
    if kind == "middle_block":
        return "MID"
    return f"{'IN' if kind == 'input_blocks' else 'OUT'}{index:02d}"


def block_weight(lora_key: str, weights: dict[str, float] | None) -> float:
    """The multiplier `weights` gives this module (1.0 where it names no block for it)."""
    if not weights:
        return 1.0
    return weights.get(block_of(lora_key), 1.0)
