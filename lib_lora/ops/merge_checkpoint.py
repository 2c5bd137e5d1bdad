"""Merge LoRAs into a checkpoint: W' = W + sum_i weight_i * block_i * (alpha_i / dim_i) * dW_i.

This is exactly what the WebUI computes when it applies `<lora:name:weight>`
(reference/webui-api.md 2.3), done once and saved. The checkpoint is read
tensor by tensor and the result written tensor by tensor (checkpoint_io), in
fp32 arithmetic, rounded to the output precision (fp16 by default) only when
written. The base file is opened read-only and never replaced. OpenCLIP's fused
q/k/v weight (SD2, SDXL's second text encoder) takes the q, k and v LoRA
modules on its three row blocks, as the WebUI does.

The report lists every changed layer with how much of its change survived the
rounding to the output precision (a small change on a large weight can drown in
fp16), and the LoRA modules that found no layer.
"""
from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch

from ..checkpoint_io import PlannedTensor, StateReader, detect_family, is_ema_key, \
    write_safetensors_streaming
from ..errors import LoraError, NetworkFileError
from ..networks.keys import checkpoint_in_proj_keys, checkpoint_param_to_lora_key
from ..precisions import precision_dtype
from .config import MergeConfig, validated
from .lora_inputs import LoraInput, modules_by_key
from .report import LayerReport, OpReport, relative_error

Progress = Callable[[int, int, str], None]


def _keys_of(name: str, family: str) -> list[str]:
    """The module keys that change checkpoint tensor `name` (three for a fused q/k/v weight)."""
    fused = checkpoint_in_proj_keys(name, family)
    if fused:
        return fused if name.endswith("in_proj_weight") else []
    if not name.endswith(".weight"):
        return []
    key = checkpoint_param_to_lora_key(name, family)
    return [key] if key else []


def _module_sum(entries: list[tuple[LoraInput, str]], shape: tuple[int, ...], device: str) -> torch.Tensor | None:
    """sum_i multiplier_i * dW_i of one module key over the LoRAs that have it, shaped like the weight."""
    total = None
    for lora, own_key in entries:
        delta = lora.modules[own_key].delta(device)
        if delta.numel() != math.prod(shape):
            raise NetworkFileError(f"Module {own_key} changes a weight of shape {tuple(delta.shape)}, but the "
                                   f"checkpoint's is {shape}", where=lora.label,
                                   fix="This LoRA was made for another model family or size; merge it into a "
                                       "checkpoint of its own base family")
        delta = delta.reshape(shape) * lora.multiplier(own_key)
        total = delta if total is None else total + delta
    return total


def merged_delta(weight_shape: torch.Size, keys: list[str], contributions: dict, device: str) -> torch.Tensor | None:
    """The summed, weighted change of one checkpoint tensor (fp32), or None if no LoRA touches it.
    With three keys (fused q/k/v) each one changes its third of the rows."""
    chunk_shape = (weight_shape[0] // len(keys), *weight_shape[1:])
    chunks = [_module_sum(contributions.get(key, []), chunk_shape, device) for key in keys]
    if all(c is None for c in chunks):
        return None
    return torch.cat([c if c is not None else torch.zeros(chunk_shape, device=device) for c in chunks])


def _rank_of(keys: list[str], contributions: dict) -> int:
    return sum(lora.modules[own].dim() or 1 for key in keys for lora, own in contributions.get(key, []))


def _planned(reader: StateReader, name: str, keys: list[str], contributions: dict, config: MergeConfig,
             report: OpReport) -> PlannedTensor:
    dtype = reader.dtype(name)
    out_dtype = precision_dtype(config.precision) if dtype.is_floating_point else dtype

    def produce() -> torch.Tensor:
        weight = reader.get(name)
        delta = merged_delta(weight.shape, keys, contributions, config.device) if keys else None
        if delta is None:
            return weight
        merged = weight.to(config.device, torch.float32) + delta
        stored = merged.to(out_dtype)
        lost = float(torch.linalg.vector_norm(stored.float() - weight.float().to(config.device) - delta,
                                              dtype=torch.float64) ** 2)
        energy = float(torch.linalg.vector_norm(delta, dtype=torch.float64) ** 2)
        report.add(LayerReport("+".join(keys) if len(keys) > 1 else keys[0], "x".join(map(str, weight.shape)),
                               _rank_of(keys, contributions), relative_error(energy, lost), 1.0,
                               math.sqrt(energy), "merge", f"rounded to {config.precision}"))
        return stored.cpu()
    return PlannedTensor(name, out_dtype, reader.shape(name), produce)


def merge_into_checkpoint(base_source: str | Path | Mapping[str, torch.Tensor], inputs: list[LoraInput],
                          out_path: str | Path, config: MergeConfig, progress: Progress | None = None) -> OpReport:
    """Write `base + LoRAs` to `out_path` (.safetensors); return the report. The base is never written."""
    validated(config)
    out_path = Path(out_path)
    if not isinstance(base_source, Mapping) and out_path.resolve() == Path(base_source).resolve():
        raise LoraError("The output would overwrite the base checkpoint", where=str(out_path),
                        fix="Choose another output file name; the base is never modified")
    if out_path.suffix.lower() != ".safetensors":
        raise LoraError("Merged checkpoints are written as .safetensors only", where=str(out_path),
                        fix="Give the output a .safetensors name")
    report = OpReport("merge", settings={**config.summary(), "loras": [x.label for x in inputs]})
    with StateReader(base_source, "base") as reader:
        family = detect_family(reader.keys(), reader.label)
        contributions = modules_by_key(inputs, family)
        names = [n for n in reader.keys() if not (config.drop_ema and is_ema_key(n))]
        used: set[str] = set()
        planned = []
        for name in names:
            keys = _keys_of(name, family)
            keys = keys if any(k in contributions for k in keys) else []
            used.update(k for k in keys if k in contributions)
            planned.append(_planned(reader, name, keys, contributions, config, report))
        _check_coverage(contributions, used, report)
        if progress is not None:
            planned = _with_progress(planned, progress)
        metadata = dict(reader.metadata())
        metadata["lib_lora_merge"] = json.dumps({"loras": [{"name": x.label, "weight": x.weight, "blocks": x.blocks}
                                                           for x in inputs], "precision": config.precision,
                                                 "drop_ema": config.drop_ema})
        write_safetensors_streaming(out_path, planned, metadata)
    if config.drop_ema:
        report.notes.append("EMA weights (model_ema.*) left out")
    return report


def _check_coverage(contributions: dict, used: set[str], report: OpReport) -> None:
    unused = sorted(set(contributions) - used)
    if contributions and not used:
        raise NetworkFileError("No module of the LoRA(s) matches a layer of this checkpoint",
                               where=", ".join(sorted({lora.label for c in contributions.values() for lora, _ in c})),
                               fix="Merge into a checkpoint of the family the LoRA was trained for (SD1/SD2/SDXL)")
    if unused:
        report.notes.append(f"{len(unused)} LoRA modules found no layer and were ignored, e.g. {unused[0]}")


def _with_progress(planned: list[PlannedTensor], progress: Progress) -> list[PlannedTensor]:
    def wrap(i: int, entry: PlannedTensor) -> PlannedTensor:
        def produce() -> torch.Tensor:
            progress(i, len(planned), entry.name)
            return entry.produce()
        return PlannedTensor(entry.name, entry.dtype, entry.shape, produce)
    return [wrap(i, e) for i, e in enumerate(planned)]
