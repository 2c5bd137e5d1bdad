"""Resize a LoRA's rank (fixed or dynamic), reporting what each layer lost.

A plain LoRA module W = up @ down is re-decomposed exactly through
svd_of_product (no dense matrix, no randomness), truncated to the new rank, and
given alpha' = (alpha / dim) * r' so the WebUI's scale, and so the strength at a
given weight, is unchanged (sd-scripts' resize_lora.py keeps the scale the same
way). LoHa, LoKr and CP modules are rebuilt densely and become plain LoRA
modules with alpha = rank. The relative error of a layer is
sqrt(sum of discarded s_i^2 / sum of all s_i^2) plus the rounding to the save
precision: resizing to the same rank is lossless up to that rounding.
"""
from __future__ import annotations

import json
from collections.abc import Callable

import torch

from ..precisions import precision_dtype
from .config import ResizeConfig, validated
from .factors import pack_lora, stored_row
from .lora_delta import ModuleWeights, check_supported, group_modules
from .report import LayerReport, OpReport
from .svd import RankRule, svd_of_product, truncated_svd


def _rule(config: ResizeConfig, weight_shape: tuple[int, ...]) -> RankRule:
    is_3x3 = len(weight_shape) == 4 and weight_shape[2] * weight_shape[3] > 1
    rank = config.conv_dim if is_3x3 and config.conv_dim else config.dim
    return RankRule(max_rank=rank, dynamic=config.dynamic, param=config.dynamic_param, method="exact")


def resize_module(module: ModuleWeights, config: ResizeConfig) -> tuple[dict[str, torch.Tensor], LayerReport]:
    """One module at its new rank: (tensors, report row)."""
    check_supported(module)
    save_dtype = precision_dtype(config.precision)
    if module.is_plain_lora():
        up, down = module.factors()
        shape = module.out_in_shape()
        trunc = svd_of_product(up.to(config.device), down.to(config.device), _rule(config, shape))
        alpha = module.scale() * trunc.rank
        reference = up.to(config.device) @ down.to(config.device)
    else:
        delta = module.delta(config.device)
        shape, reference = tuple(delta.shape), delta.flatten(1)
        trunc = truncated_svd(reference, _rule(config, shape))
        alpha = float(trunc.rank)
    row = stored_row(module.key, shape, reference, trunc, save_dtype)
    row.note = f"rank {module.dim()} -> {trunc.rank}" if module.dim() else f"{module.algo} -> rank {trunc.rank}"
    return pack_lora(trunc.up, trunc.down, shape, alpha, save_dtype), row


def resize_lora(tensors: dict[str, torch.Tensor], config: ResizeConfig, where: str = "",
                progress: Callable[[int, int, str], None] | None = None) -> tuple[dict[str, torch.Tensor], OpReport]:
    """The resized LoRA's tensors (same keys) and the per-layer report; `progress(done, total, key)`
    before each module (it may raise to stop)."""
    validated(config)
    report = OpReport("resize", settings=config.summary())
    out: dict[str, torch.Tensor] = {}
    modules = group_modules(tensors, where)
    for i, (key, module) in enumerate(modules.items()):
        if progress is not None:
            progress(i, len(modules), key)
        module_tensors, row = resize_module(module, config)
        report.add(row)
        out.update({f"{key}.{part}": t for part, t in module_tensors.items()})
    return out, report


def resized_metadata(metadata: dict[str, str], tensors: dict[str, torch.Tensor], config: ResizeConfig,
                     report: OpReport) -> dict[str, str]:
    """The input's metadata with the new dim/alpha, a comment saying what happened, and stale hashes dropped."""
    meta = {k: v for k, v in metadata.items() if not k.startswith("sshs_")}
    ranks = {row.rank for row in report.written}
    old_dim = metadata.get("ss_network_dim", "?")
    if config.dynamic or len(ranks) > 1:
        meta["ss_network_dim"] = meta["ss_network_alpha"] = "Dynamic"
        what = f"Dynamic resize with {config.dynamic or 'fixed'}: {config.dynamic_param} from {old_dim}"
    else:
        meta["ss_network_dim"] = str(ranks.pop() if ranks else config.dim)
        alphas = {round(float(v), 6) for k, v in tensors.items() if k.endswith(".alpha")}
        meta["ss_network_alpha"] = f"{alphas.pop():g}" if len(alphas) == 1 else "Dynamic"
        what = f"dimension is resized from {old_dim} to {config.dim}"
    meta["ss_network_module"] = "networks.lora"
    meta["ss_training_comment"] = f"{what}; {metadata.get('ss_training_comment', '')}".rstrip("; ")
    meta["lib_lora_resize"] = json.dumps(report.summary())
    return meta
