"""Borrow the WebUI's loaded model for training and give it back exactly as it was.

`training_session(sd_model, opts, cfg)` puts the model into a known state (the
built-in Lora extension's merged weights restored and its networks cleared, every
base parameter frozen, attention optimizations undone unless the user keeps them
for training (the trainer then runs attention through SDPA per instance when
`training.sdpa` is on: LdmModel.set_attention), clip skip set for the run's
previews, ldm's own block checkpointing off because it drops LoRA gradients) and
yields an `LdmModel`. On every way out (success, cancel,
exception, NaN, out of memory, KeyboardInterrupt) it restores devices, dtypes,
requires_grad, training flags, hooks and per-instance forwards, options and
optimizations, and releases VRAM. Parameters are never copied: nothing in the
session writes to base weights (LoRA adds its own modules), and tests prove
the weights come back bit for bit with `fingerprint`.

Why freeze: the WebUI loads the UNet with requires_grad=True (ldm and sgm freeze
only the VAE and the text encoders), so a backward through it would compute and
keep a full-size gradient for every UNet weight (one more copy of the UNet: +3.2
GiB for SD1.5 in fp32), and autocast would cache a half-precision copy of every
fp32 weight that requires grad for the whole forward.

About merged LoRAs: the WebUI treats weights merged by `<lora:...>` as a cache
(its backups are the real weights). We restore the real weights and leave no
network loaded, so the next generation merges again what its prompt asks for:
generation before and after training is identical.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from dataclasses import dataclass, field
from typing import Any, Iterator

import torch
from torch import nn

from lib_lora.errors import ModelError
from lib_lora.models.ldm_adapter import LdmModel
from lib_lora.webui.fingerprint import HOOK_DICTS, differences, fingerprint  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

LDM_CHECKPOINT_FLAGS = ("use_checkpoint", "checkpoint")
FP8_DTYPES = tuple(getattr(torch, n) for n in ("float8_e4m3fn", "float8_e5m2") if hasattr(torch, n))


def _headless_hint(sd_model: Any) -> str:
    info = getattr(sd_model, "sd_checkpoint_info", None)
    path = getattr(info, "filename", None) or "<the checkpoint file>"
    return ("or train headless with the same settings: save them with the Train tab's Save preset, then run "
            "`python -m lib_lora train --config <that preset's .toml> --set "
            f"\"model.pretrained={path}\"` in the extension's folder (a single-file checkpoint loads offline "
            "for SD1.x, SD2.x and SDXL base). Nothing was changed on the loaded model")


def _low_vram_flags(cmd_opts: Any) -> str:
    """The flags behind the WebUI's low-VRAM mode, for the message: --lowvram/--medvram when given,
    else --medvram-sdxl (the only other flag modules.lowvram.is_needed reads)."""
    flags = [f"--{name}" for name in ("lowvram", "medvram") if getattr(cmd_opts, name, False)]
    if not flags and getattr(cmd_opts, "medvram_sdxl", False):
        flags = ["--medvram-sdxl"]
    return " and ".join(flags) or "a low-VRAM mode"


def check_supported(sd_model: Any, cmd_opts: Any, fp8_enabled: bool, low_vram: bool) -> None:
    """Refuse what cannot train, with what to do instead; runs before the model is touched.
    low_vram: the WebUI's own verdict for this model (modules.lowvram.is_needed)."""
    if sd_model is None or not hasattr(sd_model, "model"):
        raise ModelError("No checkpoint is loaded in the WebUI", where="Stable Diffusion checkpoint",
                         fix="Pick a checkpoint at the top of the page, wait for it to load, then start training")
    if low_vram or getattr(sd_model, "lowvram", False):
        flags = _low_vram_flags(cmd_opts) if low_vram else "a low-VRAM mode"
        raise ModelError(
            f"The WebUI runs with {flags}, which moves model parts between CPU and GPU at every step; "
            "training needs the whole model on the GPU", where="WebUI command line",
            fix=f"Restart the WebUI without {flags} (remove it from COMMANDLINE_ARGS in webui-user.bat or "
                "webui-user.sh) and start the run again; the VRAM check then names the settings that fit "
                "(offloading after caching, gradient checkpointing, an 8-bit optimizer, smaller batches); "
                + _headless_hint(sd_model))
    if fp8_enabled or any(p.dtype in FP8_DTYPES for p in sd_model.model.diffusion_model.parameters()):
        raise ModelError("The checkpoint is stored in FP8, which cannot be trained",
                         where="Settings > Stable Diffusion > FP8 weight",
                         fix="Set FP8 weight to Disable, reload the checkpoint, then start the run again; "
                             + _headless_hint(sd_model))


@dataclass
class _Snapshot:
    """What we restore without copying any weights."""
    placements: list[tuple[nn.Module, str, str, torch.device, torch.dtype]] = field(default_factory=list)
    requires_grad: list[tuple[nn.Parameter, bool]] = field(default_factory=list)
    training: list[tuple[nn.Module, bool]] = field(default_factory=list)
    forwards: list[tuple[nn.Module, Any]] = field(default_factory=list)
    hook_keys: list[tuple[nn.Module, str, tuple]] = field(default_factory=list)
    block_flags: list[tuple[nn.Module, str, Any]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)


def capture(sd_model: nn.Module) -> _Snapshot:
    snap = _Snapshot()
    for module in sd_model.modules():
        for kind in ("_parameters", "_buffers"):
            for name, tensor in getattr(module, kind).items():
                if tensor is not None:
                    snap.placements.append((module, kind, name, tensor.device, tensor.dtype))
        for param in module._parameters.values():
            if param is not None:
                snap.requires_grad.append((param, param.requires_grad))
        snap.training.append((module, module.training))
        snap.forwards.append((module, module.__dict__.get("forward")))
        for attr in HOOK_DICTS:
            hooks = getattr(module, attr, None)
            if hooks is not None:
                snap.hook_keys.append((module, attr, tuple(hooks.keys())))
        for flag in LDM_CHECKPOINT_FLAGS:
            if isinstance(getattr(module, flag, None), bool):
                snap.block_flags.append((module, flag, getattr(module, flag)))
    return snap


def restore(snap: _Snapshot) -> None:
    """Put back everything recorded in the snapshot; each part is independent so one failure
    cannot stop the others."""
    with torch.no_grad():
        for module, kind, name, device, dtype in snap.placements:
            tensor = getattr(module, kind).get(name)
            if tensor is not None and (tensor.device != device or tensor.dtype != dtype):
                if kind == "_parameters":
                    tensor.data = tensor.data.to(device, dtype)
                else:
                    module._buffers[name] = tensor.to(device, dtype)
    for param, flag in snap.requires_grad:
        param.requires_grad_(flag)
        param.grad = None
    for module, flag in snap.training:
        module.training = flag
    for module, forward in snap.forwards:
        if forward is None:
            module.__dict__.pop("forward", None)
        else:
            module.forward = forward
    for module, attr, keys in snap.hook_keys:
        hooks = getattr(module, attr)
        for key in [k for k in hooks if k not in keys]:
            del hooks[key]
    for module, flag, value in snap.block_flags:
        setattr(module, flag, value)


def clear_builtin_lora(sd_model: nn.Module) -> int:
    """Restore weights the built-in Lora extension merged in place and unload its networks.
    Returns how many layers held networks applied by the built-in Lora (backups stay after a LoRA
    is unloaded, so layers with a backup but no current network names already hold their real
    weights; its patched forwards mark every named layer they ran, norms included, so this
    counts layers the networks touched, not only those a LoRA changed)."""
    networks = sys.modules.get("networks")
    if networks is not None and isinstance(getattr(networks, "loaded_networks", None), list):
        networks.loaded_networks.clear()
    restore_fn = getattr(networks, "network_restore_weights_from_backup", None)
    restored = 0
    with torch.no_grad():
        for module in sd_model.modules():
            weights = getattr(module, "network_weights_backup", None)
            bias = getattr(module, "network_bias_backup", None)
            if weights is None and bias is None:
                continue
            if restore_fn is not None:
                restore_fn(module)
            else:   # the module is gone (extension disabled) but its backups are still here
                _restore_by_hand(module, weights, bias)
            restored += bool(getattr(module, "network_current_names", ()))
            module.network_current_names = ()
    return restored


def _restore_by_hand(module: nn.Module, weights: Any, bias: Any) -> None:
    """What the built-in Lora's network_restore_weights_from_backup does: a MultiheadAttention
    keeps (in_proj_weight, out_proj.weight) and out_proj's bias; other layers weight and bias."""
    if isinstance(module, nn.MultiheadAttention):
        if isinstance(weights, (tuple, list)):
            module.in_proj_weight.copy_(weights[0])
            module.out_proj.weight.copy_(weights[1])
        if isinstance(bias, torch.Tensor):
            module.out_proj.bias.copy_(bias)
        return
    if isinstance(weights, torch.Tensor):
        module.weight.copy_(weights)
    if isinstance(bias, torch.Tensor):
        module.bias.copy_(bias)


def _freeze_base(snap: _Snapshot) -> None:
    """No base weight gets a gradient: LoRA's own parameters are the only ones trained (the
    snapshot puts each flag back as it was)."""
    for param, _ in snap.requires_grad:
        param.requires_grad_(False)


def _disable_block_checkpointing(snap: _Snapshot) -> None:
    """ldm/sgm blocks with use_checkpoint=True run ldm's CheckpointFunction, which only
    differentiates the block's own parameters: LoRA modules outside them would get no gradient."""
    for module, flag, _ in snap.block_flags:
        setattr(module, flag, False)


@contextlib.contextmanager
def training_session(sd_model: nn.Module, opts: Any, cfg: Any) -> Iterator[LdmModel]:
    """Yield an LdmModel over `sd_model`; restore the model and the WebUI state on every exit."""
    from modules import devices, lowvram, sd_hijack, shared   # the WebUI; only ever imported here, lazily
    check_supported(sd_model, shared.cmd_opts, bool(devices.fp8), bool(lowvram.is_needed(sd_model)))
    snap = capture(sd_model)
    optimizations_undone = False
    adapter = None
    try:
        restored = clear_builtin_lora(sd_model)
        if restored:
            log.info("Train LoRA: restored the real weights of %d layers the built-in Lora had applied "
                     "networks to", restored)
        if not getattr(opts, "training_xattention_optimizations", False):
            sd_hijack.undo_optimizations()
            optimizations_undone = True
        _set_option(opts, "CLIP_stop_at_last_layers", int(cfg.model.clip_skip), snap)
        _freeze_base(snap)
        _disable_block_checkpointing(snap)
        adapter = LdmModel(sd_model, sdxl_clip_l_skip=bool(getattr(opts, "sdxl_clip_l_skip", False)))
        yield adapter
    finally:
        _leave(adapter, snap, opts, optimizations_undone, sd_hijack, devices)


def _set_option(opts: Any, key: str, value: Any, snap: _Snapshot) -> None:
    snap.options.setdefault(key, getattr(opts, key, None))
    setattr(opts, key, value)


def _leave(adapter, snap: _Snapshot, opts, optimizations_undone: bool, sd_hijack, devices) -> None:
    steps = [
        lambda: adapter is not None and adapter.set_gradient_checkpointing(False),
        lambda: adapter is not None and adapter.set_attention(False),
        lambda: restore(snap),
        lambda: [setattr(opts, k, v) for k, v in snap.options.items()],
        lambda: optimizations_undone and sd_hijack.apply_optimizations(),
        devices.torch_gc,
    ]
    for step in steps:
        try:
            step()
        except Exception:   # keep restoring the rest; the WebUI must stay usable
            log.exception("Train LoRA: a step of giving the model back failed")
