"""Merge several LoRAs into one: concatenate their ranks (exact) or re-compress the sum by SVD.

Each module's change is sum_i m_i * s_i * up_i @ down_i, where m_i is the user's
weight times the block weight and s_i = alpha_i / dim_i. With `concat` the
factors are stacked, down = [down_1; down_2; ...] and up = [m_1 s_1 up_1, ...],
with alpha = the new rank (scale 1): the sum is represented exactly and the rank
is the sum of the ranks. With `svd` the sum is re-compressed to a rank (fixed or
dynamic): exactly through svd_of_product when every module is a plain LoRA
(no dense matrix is formed), else via the dense sum (LoHa, LoKr, CP).
The default of sd-scripts' merge_lora.py, adding up and down weights
elementwise, is not offered: it is not the sum of the changes.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import NetworkFileError
from ..precisions import precision_dtype
from .config import MergeConfig, validated
from .factors import pack_lora, stored_row
from .lora_inputs import LoraInput, modules_by_key
from .report import OpReport
from .svd import RankRule, Truncated, svd_of_product, truncated_svd

Entries = list[tuple[LoraInput, str]]


def _is_3x3(weight_shape: tuple[int, ...]) -> bool:
    return len(weight_shape) == 4 and weight_shape[2] * weight_shape[3] > 1


def _stacked_factors(key: str, entries: Entries) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...]]:
    """(up (out, R) with the scales folded in, down (R, in*kh*kw), the layer's weight shape)."""
    ups, downs, shape = [], [], None
    for lora, own_key in entries:
        module = lora.modules[own_key]
        if not module.is_plain_lora():
            raise NetworkFileError(f"Module {own_key} is {module.algo} (not plain up/down factors), so it "
                                   "cannot be concatenated", where=lora.label,
                                   fix="Merge with mode svd instead (--mode svd --svd-dim R), which re-compresses any type")
        this_shape = module.out_in_shape()
        if shape is not None and this_shape != shape:
            raise NetworkFileError(f"Module {key} has shape {this_shape} in {lora.label} but {shape} in another "
                                   "LoRA", where=lora.label, fix="Merge LoRAs made for the same base model")
        shape = this_shape
        up, down = module.factors()
        ups.append(up * (module.scale() * lora.multiplier(own_key)))
        downs.append(down)
    return torch.cat(ups, dim=1), torch.cat(downs, dim=0), shape


def _dense_sum(entries: Entries, device: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    total, shape = None, None
    for lora, own_key in entries:
        delta = lora.modules[own_key].delta(device) * lora.multiplier(own_key)
        if shape is not None and tuple(delta.shape) != shape:
            raise NetworkFileError(f"Module {own_key} has shape {tuple(delta.shape)} in {lora.label} but {shape} "
                                   "in another LoRA", where=lora.label, fix="Merge LoRAs made for the same base model")
        shape = tuple(delta.shape)
        total = delta if total is None else total + delta
    return total.flatten(1), shape


def _rule(config: MergeConfig, weight_shape: tuple[int, ...]) -> RankRule:
    rank = config.svd_conv_dim if _is_3x3(weight_shape) and config.svd_conv_dim else config.svd_dim
    return RankRule(max_rank=rank, dynamic=config.dynamic, param=config.dynamic_param)


def merge_module(key: str, entries: Entries, config: MergeConfig):
    """One module of the merged LoRA: (tensors, report row)."""
    save_dtype = precision_dtype(config.precision)
    plain = all(lora.modules[own].is_plain_lora() for lora, own in entries)
    if config.mode == "concat" or plain:
        up, down, shape = _stacked_factors(key, entries)
        reference = up @ down
        if config.mode == "concat":
            trunc = Truncated(up, down, torch.empty(0), float(reference.square().sum()), "concat")
        else:
            trunc = svd_of_product(up, down, _rule(config, shape))
    else:
        reference, shape = _dense_sum(entries, config.device)
        trunc = truncated_svd(reference, _rule(config, shape))
    row = stored_row(key, shape, reference, trunc, save_dtype)
    return pack_lora(trunc.up, trunc.down, shape, trunc.rank, save_dtype), row


def merge_loras(inputs: list[LoraInput], config: MergeConfig, family: str,
                progress: Callable[[int, int, str], None] | None = None) -> tuple[dict[str, torch.Tensor], OpReport]:
    """The merged LoRA's tensors (sd-scripts keys for `family`) and the per-layer report;
    `progress(done, total, key)` before each module (it may raise to stop)."""
    validated(config)
    report = OpReport("merge", settings={**config.summary(), "loras": [x.label for x in inputs]})
    tensors: dict[str, torch.Tensor] = {}
    modules = modules_by_key(inputs, family)
    for i, (key, entries) in enumerate(modules.items()):
        if progress is not None:
            progress(i, len(modules), key)
        module_tensors, row = merge_module(key, entries, config)
        report.add(row)
        tensors.update({f"{key}.{part}": t for part, t in module_tensors.items()})
    if config.mode == "concat":
        report.notes.append("ranks concatenated: the merged LoRA is the exact sum (up to the save precision)")
    return tensors, report
