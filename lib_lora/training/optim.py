"""Optimizers and learning-rate schedules by name: a dict of small builders each.

Third-party optimizers are imported only when chosen, with a clear message if
the package is missing. Schedules are plain functions of the step (LambdaLR),
so resuming restores them exactly from the step counter.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import torch

from ..errors import ConfigError, LoraError


def parse_optimizer_args(text: str) -> dict:
    """'weight_decay=0.1 betas=0.9,0.99 decouple=True' -> kwargs."""
    out: dict = {}
    for item in text.split():
        if "=" not in item:
            raise ConfigError("training.optimizer_args", item, "key=value pairs separated by spaces")
        key, raw = item.split("=", 1)
        values = [_literal(v) for v in raw.split(",")]
        out[key] = tuple(values) if len(values) > 1 else values[0]
    return out


def _literal(text: str):
    if text in ("True", "true"):
        return True
    if text in ("False", "false"):
        return False
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise LoraError(f"The optimizer needs the package {package}, which is not installed",
                        where="training.optimizer", fix=f"pip install {package}, or choose AdamW") from None


def _bnb(name: str):
    def build(groups, kw):
        bnb = _need("bitsandbytes.optim", "bitsandbytes")
        return getattr(bnb, name)(groups, **kw)
    return build


def _adafactor(groups, kw):
    from transformers.optimization import Adafactor

    kw = {"scale_parameter": False, "relative_step": False, "warmup_init": False, **kw}
    return Adafactor(groups, **kw)


def _schedulefree(groups, kw):
    sf = _need("schedulefree", "schedulefree")
    return sf.AdamWScheduleFree(groups, **kw)


def _adamw(groups, kw):
    # The fused kernel updates all tensors in one call: about 4x faster than the default
    # per-tensor loop on CPU, which matters next to a small model's step.
    params = [p for g in groups for p in g["params"]]
    fusable = all(p.device.type in ("cpu", "cuda") and p.dtype in (torch.float32, torch.float16, torch.bfloat16)
                  for p in params)
    return torch.optim.AdamW(groups, **{"fused": fusable, **kw})


OPTIMIZER_BUILDERS: dict[str, Callable] = {
    "AdamW": _adamw,
    "AdamW8bit": _bnb("AdamW8bit"),
    "Lion8bit": _bnb("Lion8bit"),
    "Lion": lambda g, kw: _need("lion_pytorch", "lion-pytorch").Lion(g, **kw),
    "Prodigy": lambda g, kw: _need("prodigyopt", "prodigyopt").Prodigy(g, **kw),
    "DAdaptAdam": lambda g, kw: _need("dadaptation", "dadaptation").DAdaptAdam(g, **{"decouple": True, **kw}),
    "Adafactor": _adafactor,
    "SGDNesterov": lambda g, kw: torch.optim.SGD(g, **{"momentum": 0.9, "nesterov": True, **kw}),
    "AdamWScheduleFree": _schedulefree,
}


# Adaptive optimizers estimate one step size for all groups and refuse groups with different LRs
# (at their first step, deep in a run); say so before training starts instead.
SINGLE_LR_OPTIMIZERS = ("Prodigy", "DAdaptAdam")


def build_optimizer(name: str, param_groups: list[dict], weight_decay: float, extra_args: str):
    lrs = {g["lr"] for g in param_groups}
    if name in SINGLE_LR_OPTIMIZERS and len(lrs) > 1:
        raise ConfigError("training.text_encoder_lr", min(lrs),
                          f"the same value as training.unet_lr ({max(lrs)}): {name} adapts one step size for all "
                          f"parameters (1.0 for both is usual), or 0 to leave the text encoder untrained")
    kw = {"weight_decay": weight_decay, **parse_optimizer_args(extra_args)}
    if name == "SGDNesterov" or name == "Adafactor":
        kw.setdefault("weight_decay", 0.0)
    try:
        return OPTIMIZER_BUILDERS[name](param_groups, kw)
    except TypeError as e:
        raise ConfigError("training.optimizer_args", extra_args, f"arguments {name} accepts ({e})") from None


def warmup_steps(warmup: float, total_steps: int) -> int:
    return int(round(warmup * total_steps)) if warmup < 1 else int(warmup)


def lr_factor(schedule: str, step: int, total: int, warmup: int, cycles: int = 1, power: float = 1.0) -> float:
    """Multiplier of the base LR at `step` (0-based), like diffusers' get_scheduler family."""
    if schedule == "constant":
        return 1.0
    if step < warmup:
        return (step + 1) / max(1, warmup)
    if schedule == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(1.0, progress)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    if schedule == "cosine_with_restarts":
        if progress >= 1.0:
            return 0.0
        return 0.5 * (1.0 + math.cos(math.pi * ((cycles * progress) % 1.0)))
    if schedule == "polynomial":
        return (1.0 - progress) ** power
    raise ConfigError("training.lr_scheduler", schedule, "a known schedule")


def build_scheduler(optimizer, schedule: str, total_steps: int, warmup: float, cycles: int, power: float):
    n_warm = warmup_steps(warmup, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(schedule, step, total_steps, n_warm, cycles, power))


def restore_current_lr(optimizer, scheduler) -> None:
    """Set each group's LR from the schedule at its restored position.

    A resumed run may have a longer schedule than the saved one ("N more epochs"):
    the LR saved in the optimizer state belongs to the old schedule, so it is
    recomputed for the new one before the first step."""
    for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
        group["lr"] = base * factor(scheduler.last_epoch)
    scheduler._last_lr = [group["lr"] for group in optimizer.param_groups]


@contextlib.contextmanager
def evaluation_weights(optimizer):
    """Schedule-free optimizers train on one weight sequence and evaluate on its average:
    saving, sampling and validation must see the averaged weights (optimizer.eval()),
    and training continues on the other set afterwards (optimizer.train())."""
    switch = callable(getattr(optimizer, "eval", None)) and callable(getattr(optimizer, "train", None))
    if switch:
        optimizer.eval()
    try:
        yield
    finally:
        if switch:
            optimizer.train()
