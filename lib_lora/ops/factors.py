"""Low-rank factors as a LoRA file stores them, and what storing them costs.

`pack_lora` shapes fp32 factors the way the WebUI reads them (linear: up (out, r),
down (r, in); conv: up (out, r, 1, 1), down (r, in, kh, kw)) in the save
precision, with alpha. `stored_row` measures the relative error of the stored
factors against the change they stand for, after rounding, so a report never
claims more accuracy than the file holds.
"""
from __future__ import annotations

import math

import torch

from .report import LayerReport, relative_error
from .svd import Truncated


def pack_lora(up: torch.Tensor, down: torch.Tensor, weight_shape: tuple[int, ...], alpha: float,
              save_dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """{'lora_up.weight', 'lora_down.weight', 'alpha'} for a layer of `weight_shape` (out, in[, kh, kw])."""
    rank = up.shape[1]
    up, down = up.to(save_dtype).cpu(), down.to(save_dtype).cpu()
    if len(weight_shape) == 4:
        down = down.reshape(rank, *weight_shape[1:])
        up = up.reshape(weight_shape[0], rank, 1, 1)
    return {"lora_up.weight": up.contiguous(), "lora_down.weight": down.contiguous(),
            "alpha": torch.tensor(float(alpha))}


def residual_energy(reference: torch.Tensor, up: torch.Tensor, down: torch.Tensor, scale: float,
                    save_dtype: torch.dtype) -> float:
    """||reference - scale * up @ down||_F^2 with the factors rounded to `save_dtype` first.

    Args:
        reference: (out, in*kh*kw) fp32; up: (out, r); down: (r, in*kh*kw)."""
    approx = up.to(save_dtype).float() @ down.to(save_dtype).float()
    residual = reference - approx * scale
    return float(torch.linalg.vector_norm(residual, dtype=torch.float64) ** 2)


def stored_row(layer: str, weight_shape: tuple[int, ...], reference: torch.Tensor, trunc: Truncated,
               save_dtype: torch.dtype, scale: float = 1.0) -> LayerReport:
    """The report row of `trunc` stored in `save_dtype`, against `reference` (flattened to 2-D):
    relative error of scale * up @ down after rounding, and the energy the kept singular values carry."""
    energy = float(torch.linalg.vector_norm(reference, dtype=torch.float64) ** 2)
    lost = residual_energy(reference, trunc.up, trunc.down, scale, save_dtype)
    kept = trunc.energy_kept if trunc.kept.numel() == trunc.rank and trunc.method != "concat" else 1.0
    return LayerReport(layer=layer, shape="x".join(map(str, weight_shape)), rank=trunc.rank,
                       relative_error=relative_error(energy, lost), energy_kept=kept,
                       delta_norm=math.sqrt(energy), method=trunc.method)
