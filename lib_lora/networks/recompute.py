"""A layer op with a weight built from small factors, whose backward rebuilds that weight instead of keeping it.

LoHa and LoKr (and DoRA on them), LoRA with DoRA, and every projection of a fused
MultiheadAttention (mha.py) run the wrapped Linear/Conv2d once with a new weight
W' = W + dW built from a few small factors. Run through plain autograd,
that op keeps W' (and, under autocast, its half-precision copy) alive from the
forward to the backward: one weight-sized tensor per adapted layer for the whole
step, several GiB on SDXL. `RecomputedWeightOp` keeps only the input x and the
factors; its backward rebuilds W' from the factors (under autograd, so the
factors' gradients come from autograd.grad of <W', grad_W'> whatever the
algorithm), computes grad_x and grad_W' with torch's own convolution/linear
backward, and drops the rebuilt weight when it returns. The base weight is read
through the `weight_fn` closure at both times (never saved, never given a grad:
callers use this op only while it is frozen).

Autocast: torch.amp.custom_fwd/custom_bwd bind one device type when decorating;
this op runs on whatever device its input is on, so it records that device's
autocast state in forward and re-enters it in backward, as they do. W' is rebuilt
under the same state (same numbers as the forward's), and the gradients are
computed in the dtype the forward op computed in (its output's dtype), as
autograd does for F.linear/F.conv2d under autocast.

Gradient checkpointing: nothing is stored on a module or global, so the op may
be rerun (re-entrant checkpointing) or have its saved tensors packed and
unpacked (non-reentrant checkpointing, saved-tensor hooks) freely.
"""
from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

WeightFn = Callable[..., torch.Tensor]


@dataclass(frozen=True)
class LayerGeometry:
    """What the op needs of the wrapped layer besides its weight: Linear, or Conv2d's geometry."""
    conv: bool
    stride: tuple[int, ...] = (1, 1)
    padding: tuple[int, ...] = (0, 0)
    dilation: tuple[int, ...] = (1, 1)
    groups: int = 1

    @staticmethod
    def of(layer: nn.Module) -> LayerGeometry | None:
        """The geometry of `layer`; None for a conv this op does not reproduce (padding modes, 'same')."""
        if not isinstance(layer, nn.Conv2d):
            return LayerGeometry(conv=False)
        if layer.padding_mode != "zeros" or isinstance(layer.padding, str):
            return None
        return LayerGeometry(True, tuple(layer.stride), tuple(layer.padding), tuple(layer.dilation), layer.groups)

    def run(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        if self.conv:
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        return F.linear(x, weight, bias)

    def input_and_weight_grads(self, grad_out: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                               need_x: bool, need_weight: bool) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """grad_x and grad_W of op(x, W) for grad_out, as torch's own backward of the op computes them."""
        if self.conv:
            grad_x, grad_w, _ = torch.ops.aten.convolution_backward(
                grad_out, x, weight, None, list(self.stride), list(self.padding), list(self.dilation),
                False, [0, 0], self.groups, [need_x, need_weight, False])
            return grad_x, grad_w
        grad_x = grad_out.matmul(weight) if need_x else None
        grad_w = grad_out.reshape(-1, grad_out.shape[-1]).t().mm(x.reshape(-1, x.shape[-1])) if need_weight else None
        return grad_x, grad_w

    def bias_grad(self, grad_out: torch.Tensor) -> torch.Tensor:
        return grad_out.sum(dim=(0, 2, 3)) if self.conv else grad_out.reshape(-1, grad_out.shape[-1]).sum(0)


def _autocast_state(device_type: str) -> tuple[bool, torch.dtype | None]:
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return True, torch.get_autocast_dtype(device_type)
    return False, None


def _autocast(device_type: str, dtype: torch.dtype | None, enabled: bool) -> Any:
    """Autocast on or off as given; nothing on a device type autocast does not know (meta)."""
    if not torch.amp.is_autocast_available(device_type):
        return nullcontext()
    return torch.autocast(device_type, dtype=dtype, enabled=enabled)


class RecomputedWeightOp(torch.autograd.Function):
    """op(x, weight_fn(*factors), bias), saving x and the factors only (see the module docstring)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor | None, geometry: LayerGeometry,
                weight_fn: WeightFn, *factors: torch.Tensor) -> torch.Tensor:
        device_type = x.device.type
        ctx.autocast = (device_type, *_autocast_state(device_type))
        out = geometry.run(x, weight_fn(*factors), bias)    # autocast, if on, casts here as in a plain call
        ctx.save_for_backward(x, *factors)
        ctx.geometry, ctx.weight_fn, ctx.compute_dtype = geometry, weight_fn, out.dtype
        ctx.bias_dtype = None if bias is None else bias.dtype
        return out

    @staticmethod
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, *factors = ctx.saved_tensors
        need_x, need_bias = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_factors = ctx.needs_input_grad[4:]
        device_type, autocast_on, autocast_dtype = ctx.autocast
        with torch.enable_grad(), _autocast(device_type, autocast_dtype, autocast_on):
            leaves = [f.detach().requires_grad_(need) for f, need in zip(factors, need_factors)]
            weight = ctx.weight_fn(*leaves)
        dtype = ctx.compute_dtype
        grad_out = grad_out.to(dtype)
        with _autocast(device_type, None, False):
            grad_x, grad_w = ctx.geometry.input_and_weight_grads(
                grad_out, x.to(dtype), weight.detach().to(dtype), need_x, any(need_factors))
        factor_grads: list[torch.Tensor | None] = [None] * len(factors)
        if grad_w is not None and weight.requires_grad:
            wanted = [i for i, need in enumerate(need_factors) if need]
            found = torch.autograd.grad(weight, [leaves[i] for i in wanted], grad_w.to(weight.dtype),
                                        allow_unused=True)
            for i, grad in zip(wanted, found):
                factor_grads[i] = grad
        del weight, grad_w  # the rebuilt weight and its gradient go now, not when autograd frees ctx
        grad_bias = ctx.geometry.bias_grad(grad_out).to(ctx.bias_dtype) if need_bias else None
        grad_x = grad_x.to(x.dtype) if grad_x is not None else None
        return (grad_x, grad_bias, None, None, *factor_grads)


def run_with_recomputed_weight(x: torch.Tensor, bias: torch.Tensor | None, geometry: LayerGeometry,
                               weight_fn: WeightFn, factors: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """op(x, weight_fn(*factors), bias) whose backward rebuilds the weight from the factors."""
    return RecomputedWeightOp.apply(x, bias, geometry, weight_fn, *factors)
