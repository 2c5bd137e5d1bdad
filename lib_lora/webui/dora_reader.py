"""Teach the WebUI v1.10.1's built-in Lora to read DoRA magnitudes stored per output row.

We write `dora_scale` the way LyCORIS (its default `wd_on_output`), peft/diffusers, ComfyUI and
Forge read it: one magnitude per output row, shape (out, 1[, 1, 1]). The built-in Lora's
`NetworkModule.apply_weight_decompose` always normalises per input column; a per-row tensor
is then broadcast against the column norms without any error, and the image is silently wrong
(also for every DoRA file LyCORIS writes with its defaults). This replaces that one method with
one that keeps the WebUI's own math for the per-column layout (shape (1, in[, 1, 1])) and uses
the per-row norm for the per-row layout, so both kinds of files apply as trained. The built-in
also decomposes the update before scaling it by alpha/rank (finalize_updown multiplies after);
LyCORIS and our training scale first, so the per-row branch scales inside and divides the scale
back out for finalize_updown to restore. It changes nothing for files without DoRA and is
installed once, when the WebUI has loaded its extensions.
"""
from __future__ import annotations

import logging
import sys
from typing import Any

import torch

log = logging.getLogger(__name__)

MARK = "_train_lora_row_aware"


def is_per_output_row(scale: torch.Tensor, weight: torch.Tensor) -> bool:
    """(out, 1[, 1, 1]) against a weight of `out` rows; a (1, in) column layout never matches
    (for a one-row weight both read the same)."""
    return (scale.dim() == weight.dim() and scale.shape[0] == weight.shape[0] and weight.shape[0] > 1
            and all(size == 1 for size in scale.shape[1:]))


def decompose_per_row(updown: torch.Tensor, orig_weight: torch.Tensor, dora_scale: torch.Tensor,
                      scale: float = 1.0) -> torch.Tensor:
    """W' - W with W' = (W + scale*dW) * m / ||W + scale*dW||_row, divided by `scale` (the caller's
    finalize_updown multiplies it back)."""
    orig = orig_weight.to(updown.dtype)
    merged = updown.to(orig.device) * scale + orig
    norm = merged.reshape(merged.shape[0], -1).norm(dim=1)
    norm = norm.reshape(merged.shape[0], *[1] * (merged.dim() - 1))
    change = merged * (dora_scale.to(orig.device, updown.dtype) / norm) - orig
    return change / scale if scale else change


def install(network_module: Any | None = None) -> bool:
    """Wrap `network.NetworkModule.apply_weight_decompose` of the built-in Lora (found in
    sys.modules when not given); returns whether it is in place now."""
    module = network_module if network_module is not None else sys.modules.get("network")
    cls = getattr(module, "NetworkModule", None)
    original = getattr(cls, "apply_weight_decompose", None)
    if original is None:
        return False          # the built-in Lora is disabled, or a fork without DoRA
    if getattr(original, MARK, False):
        return True

    def apply_weight_decompose(self, updown, orig_weight):
        scale = getattr(self, "dora_scale", None)
        if isinstance(scale, torch.Tensor) and is_per_output_row(scale, orig_weight):
            alpha_scale = float(self.calc_scale()) if hasattr(self, "calc_scale") else 1.0
            return decompose_per_row(updown, orig_weight, scale, alpha_scale)
        return original(self, updown, orig_weight)

    setattr(apply_weight_decompose, MARK, True)
    apply_weight_decompose.__wrapped__ = original
    cls.apply_weight_decompose = apply_weight_decompose
    log.info("Train LoRA: the built-in Lora now reads DoRA magnitudes stored per output row too")
    return True
