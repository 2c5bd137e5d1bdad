"""Extract a LoRA (linear and 1x1 layers) and LoCon (3x3 convs, own rank) from two checkpoints.

For every layer sd-scripts would train, D = W_tuned - W_base is computed in fp32
and replaced by its best rank-r approximation (svd.py): up = U_r S_r, down = V_r^T,
alpha = r (scale 1). The layers are read, decomposed and written one at a time,
so memory holds a layer pair, never a model. The text encoders are kept only
when they changed by more than a stated relative threshold (a fine-tune that
froze them differs by fp16 rounding at most); the decision and the measured
change go into the report. Zero differences are skipped, not written as zeros.

Either side may be a checkpoint path or a Mapping[str, Tensor] (the WebUI's
loaded model's state_dict()). Names are ldm/sgm checkpoint names; file keys
come from networks.keys.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint_io import StateReader, detect_family
from ..errors import ModelError
from ..networks.keys import checkpoint_in_proj_keys, checkpoint_param_to_lora_key, is_unet_target, \
    ldm_to_diffusers_name
from ..precisions import precision_dtype
from .config import ExtractConfig, validated
from .factors import pack_lora, stored_row
from .report import LayerReport, OpReport
from .svd import RankRule, clamp_factors, truncated_svd

Progress = Callable[[int, int, str], None]  # (layers done, layers in all, current layer); may raise to cancel


@dataclass
class ExtractTarget:
    """One layer to extract: where its weight is in the checkpoint and what its file key is."""
    param: str                  # checkpoint name of the weight, e.g. 'model.diffusion_model...proj_in.weight'
    lora_key: str               # file key, e.g. 'lora_unet_down_blocks_0_attentions_0_proj_in'
    part: str                   # "unet" or "te"
    conv_block: bool = False    # inside a ResBlock / down- / upsampler: a LoCon-only layer
    chunk: int = -1             # OpenCLIP fused q/k/v weight: which third (0 q, 1 k, 2 v); -1 the whole weight


def plan_targets(reader: StateReader, family: str, with_conv_blocks: bool) -> list[ExtractTarget]:
    """Every weight sd-scripts' LoRA (and, with conv blocks, LoCon) would train, in checkpoint order."""
    targets: list[ExtractTarget] = []
    for name in reader.keys():
        if not (name.endswith(".weight") or name.endswith("in_proj_weight")):
            continue
        part = "unet" if name.startswith("model.diffusion_model.") else "te"
        for i, key in enumerate(checkpoint_in_proj_keys(name, family)):
            targets.append(ExtractTarget(name, key, part, chunk=i))
        key = checkpoint_param_to_lora_key(name, family)
        if key is None or len(reader.shape(name)) not in (2, 4):
            continue
        conv_block = False
        if part == "unet":
            diffusers = ldm_to_diffusers_name(name[: -len(".weight")]) or ""
            conv_block = not is_unet_target(diffusers, "attn_ff")
        if conv_block and not with_conv_blocks:
            continue
        targets.append(ExtractTarget(name, key, part, conv_block))
    return targets


def _weight(reader: StateReader, target: ExtractTarget) -> torch.Tensor:
    w = reader.get(target.param)
    if target.chunk >= 0:
        w = w.chunk(3, dim=0)[target.chunk]
    return w


def _check_shapes(base: StateReader, tuned: StateReader, targets: list[ExtractTarget]) -> None:
    """Every layer to compare has one shape in both checkpoints; asked of the headers before any
    tensor is read, so a tuned model of another size is one sentence, not a failed subtraction."""
    for t in targets:
        if t.chunk <= 0 and base.shape(t.param) != tuned.shape(t.param):
            raise ModelError(f"Layer {t.param} has shape {tuned.shape(t.param)} in the tuned model but "
                             f"{base.shape(t.param)} in the base", where=tuned.label,
                             fix="Use the checkpoint the tuned model was trained from as the base")


def text_encoder_change(base: StateReader, tuned: StateReader, targets: list[ExtractTarget]) -> tuple[float, float]:
    """(||dW||_F / ||W||_F over all text-encoder targets, max |dW|): how much the text encoders changed."""
    diff_sq = base_sq = 0.0
    max_abs = 0.0
    for t in targets:
        if t.part != "te" or t.chunk > 0:
            continue  # a fused OpenCLIP weight is measured once, whole
        w0 = base.get(t.param).float()
        d = tuned.get(t.param).float() - w0
        diff_sq += float(torch.linalg.vector_norm(d, dtype=torch.float64) ** 2)
        base_sq += float(torch.linalg.vector_norm(w0, dtype=torch.float64) ** 2)
        max_abs = max(max_abs, float(d.abs().max()) if d.numel() else 0.0)
    return (math.sqrt(diff_sq / base_sq) if base_sq > 0 else 0.0), max_abs


def extract_layer(delta: torch.Tensor, rule: RankRule, clamp_quantile: float,
                  save_dtype: torch.dtype) -> tuple[dict[str, torch.Tensor], LayerReport]:
    """Low-rank factors of one layer's difference, and how well they match it once stored.

    Args:
        delta: (out, in) or (out, in, kh, kw), fp32.
    Returns:
        ({'lora_up.weight', 'lora_down.weight', 'alpha'}, report row without the layer name).
    """
    matrix = delta.flatten(1)
    trunc = truncated_svd(matrix, rule)
    trunc.up, trunc.down = clamp_factors(trunc.up, trunc.down, clamp_quantile)
    # The error is measured on what the file will hold: clamped, rounded to the save precision.
    row = stored_row("", tuple(delta.shape), matrix, trunc, save_dtype)
    return pack_lora(trunc.up, trunc.down, tuple(delta.shape), trunc.rank, save_dtype), row


# Explicit mantissa bits of the half-precision formats a checkpoint may be stored in.
MANTISSA_BITS = {torch.float16: 10, torch.bfloat16: 7}


def rounding_noise(weight: torch.Tensor) -> float:
    """Expected Frobenius norm of the rounding error a half-precision `weight` carries (0 for fp32):
    each value is off by up to half a unit in the last place, uniformly, so by ulp^2 / 12 in energy."""
    bits = MANTISSA_BITS.get(weight.dtype)
    if bits is None:
        return 0.0
    values = weight.float()
    _, exponent = torch.frexp(values)
    ulp = torch.ldexp(torch.ones_like(values), exponent - 1 - bits)
    ulp = torch.where(values == 0, torch.zeros_like(ulp), ulp)
    return math.sqrt(float(ulp.double().square().sum()) / 12.0)


def _rule_for(target_shape: tuple[int, ...], config: ExtractConfig) -> RankRule:
    is_3x3 = len(target_shape) == 4 and target_shape[2] * target_shape[3] > 1
    rank = config.conv_dim if is_3x3 else config.dim
    return RankRule(max_rank=rank, dynamic=config.dynamic, param=config.dynamic_param, method=config.svd,
                    niter=config.niter, seed=config.seed)


def _check_pair(base: StateReader, tuned: StateReader) -> str:
    family = detect_family(base.keys(), base.label)
    tuned_family = detect_family(tuned.keys(), tuned.label)
    if family != tuned_family:
        raise ModelError(f"The base is {family} but the tuned model is {tuned_family}", where=tuned.label,
                         fix="Extract from two checkpoints of the same family (the tuned model's own base)")
    return family


def _decide_text_encoder(base: StateReader, tuned: StateReader, targets: list[ExtractTarget],
                         config: ExtractConfig, report: OpReport) -> bool:
    if config.text_encoder == "off":
        report.notes.append("text encoder: skipped (text_encoder = off)")
        return False
    change, max_abs = text_encoder_change(base, tuned, targets)
    changed = change > config.te_threshold
    verdict = "kept" if changed or config.text_encoder == "on" else "skipped as unchanged"
    report.notes.append(f"text encoder: relative change {change:.3g} (max |dW| {max_abs:.3g}), threshold "
                        f"{config.te_threshold:g} -> {verdict}")
    report.settings["text_encoder_relative_change"] = change
    return changed or config.text_encoder == "on"


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with `count` intra-op threads (0: leave torch's setting), then restore it."""
    previous = torch.get_num_threads()
    if count > 0:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _thread_count(config: ExtractConfig) -> int:
    if config.threads or config.device != "cpu":
        return config.threads
    return 0 if config.svd == "exact" or config.dynamic == "sv_cumulative" else 1


def extract_lora(base_source: str | Path | Mapping[str, torch.Tensor],
                 tuned_source: str | Path | Mapping[str, torch.Tensor],
                 config: ExtractConfig, progress: Progress | None = None
                 ) -> tuple[dict[str, torch.Tensor], OpReport, str]:
    """LoRA tensors approximating tuned - base, the per-layer report, and the model family.

    Tensors are in the save precision (config.precision), keyed as sd-scripts writes them."""
    validated(config)
    save_dtype = precision_dtype(config.precision)
    report = OpReport("extract", settings=config.summary())
    tensors: dict[str, torch.Tensor] = {}
    with StateReader(base_source, "base") as base, StateReader(tuned_source, "tuned") as tuned, \
            torch_threads(_thread_count(config)):
        family = _check_pair(base, tuned)
        targets = [t for t in plan_targets(base, family, config.conv_dim > 0) if t.param in tuned]
        _check_shapes(base, tuned, targets)
        if not _decide_text_encoder(base, tuned, targets, config, report):
            targets = [t for t in targets if t.part != "te"]
        for i, target in enumerate(targets):
            if progress is not None:
                progress(i, len(targets), target.lora_key)
            w0, w1 = _weight(base, target), _weight(tuned, target)
            delta = w1.to(config.device, torch.float32) - w0.to(config.device, torch.float32)
            if not bool(torch.isfinite(delta).all()):       # the SVD would fail deep in torch
                which = tuned.label if not bool(torch.isfinite(w1).all()) else base.label
                raise ModelError(f"Layer {target.param} holds NaN or infinite values in the {which} checkpoint",
                                 where=which, fix="That checkpoint is damaged; use an intact copy of it")
            if not bool(delta.any()):
                report.add(LayerReport(target.lora_key, "x".join(map(str, delta.shape)), 0, 0.0, 1.0, 0.0,
                                       "skipped", "unchanged"))
                continue
            layer_tensors, row = extract_layer(delta, _rule_for(tuple(delta.shape), config),
                                               config.clamp_quantile, save_dtype)
            row.layer = target.lora_key
            row.input_rounding = rounding_noise(w1) / row.delta_norm
            report.add(row)
            tensors.update({f"{target.lora_key}.{k}": v for k, v in layer_tensors.items()})
        if progress is not None:
            progress(len(targets), len(targets), "")
    return tensors, report, family
