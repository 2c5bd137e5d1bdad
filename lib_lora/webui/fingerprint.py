"""A fingerprint of everything training could leave behind on the WebUI's model.

Used by tests (and on demand by the bridge) to prove the model comes back exactly:
a hash of every parameter and buffer with its device, dtype and requires_grad,
each module's training flag, hook dictionaries and per-instance `forward`, and the
`forward` of every module class (class-wide patches such as attention optimizations).
"""
from __future__ import annotations

import hashlib

import torch
from torch import nn

HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
              "_state_dict_hooks", "_load_state_dict_pre_hooks")


def tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().to("cpu").contiguous().reshape(-1).view(torch.uint8)
    return hashlib.sha1(data.numpy().tobytes()).hexdigest()


def fingerprint(model: nn.Module) -> dict[str, tuple]:
    """name -> description; equal fingerprints mean nothing observable has changed."""
    result: dict[str, tuple] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        result[f"param {name}"] = (tensor_digest(param), str(param.device), str(param.dtype), param.requires_grad,
                                   param.grad is None)
    for name, buffer in model.named_buffers(remove_duplicate=False):
        result[f"buffer {name}"] = (tensor_digest(buffer), str(buffer.device), str(buffer.dtype))
    classes = {}
    for name, module in model.named_modules(remove_duplicate=False):
        hooks = tuple(len(getattr(module, attr, {}) or {}) for attr in HOOK_DICTS)
        forward = module.__dict__.get("forward")
        result[f"module {name}"] = (module.training, hooks, None if forward is None else id(forward))
        classes[type(module)] = id(type(module).forward)
    for cls, forward_id in classes.items():
        result[f"class {cls.__module__}.{cls.__qualname__}"] = (forward_id,)
    result["global hooks"] = (len(getattr(nn.modules.module, "_global_forward_hooks", {})),
                              len(getattr(nn.modules.module, "_global_forward_pre_hooks", {})))
    return result


def differences(before: dict[str, tuple], after: dict[str, tuple], limit: int = 10) -> list[str]:
    """Readable list of what changed, for assertion messages."""
    keys = sorted(set(before) | set(after))
    changed = [f"{k}: {before.get(k)} -> {after.get(k)}" for k in keys if before.get(k) != after.get(k)]
    return changed[:limit] + ([f"... and {len(changed) - limit} more"] if len(changed) > limit else [])
