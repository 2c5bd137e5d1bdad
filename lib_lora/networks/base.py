"""NetworkModule: what every algorithm shares — wrapping one Linear/Conv2d, scale, DoRA, merge.

An algorithm subclass (lora.py, loha.py, lokr.py) only creates its parameters and
says how to build the weight update `delta_weight()` (shape of the wrapped
layer's weight, already scaled by alpha/rank). Everything else lives here:

- Attaching replaces the wrapped layer's *instance* `forward` attribute (the
  sd-scripts way), not the class's and not with hooks: the WebUI patches
  `torch.nn.Linear.forward` class-wide for its own LoRA support, and an instance
  attribute sits in front of that without touching it. The original is called
  as `type(layer).forward(layer, ...)` at call time, so a class patch made (or
  undone) after attaching is honoured. Detaching deletes the instance attribute
  (or puts back one that was there before), leaving the layer exactly as found.
- DoRA keeps its magnitude per output row, `dora_scale` of shape (out, 1[, 1, 1]), as LyCORIS
  (wd_on_output, its default) and peft (lora_magnitude_vector) do:
  W' = (W + dW) * dora_scale / ||W + dW||_row, and the multiplier scales W' - W. ComfyUI and
  Forge detect the layout by shape (dividing by ||W||_row, near ours for small dW); the WebUI
  v1.10.1 knows only the older per-input-column layout (1, in[, 1, 1]). Files of that layout are
  read by inspect and refused with the reason by merge/resize; training cannot continue from them.
- Every algorithm names the small tensors dW is built from (`factors`, `delta_from`); while they
  train, an op with W + dW (LoHa/LoKr always, LoRA only with DoRA, every MHA projection) and
  LoHa/LoKr's separate update run through recompute.py, which keeps x and the factors (and the
  DoRA magnitude) for backward and rebuilds the weight there, instead of keeping a weight-sized
  tensor per layer for the step. Plain LoRA never builds W + dW: it adds up(down(x)).
- The wrapped layer is held in a plain list so it is not registered as a child:
  the network's parameters and state_dict then hold only the network's own tensors.
"""
from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .projection_slot import ProjectionSlot
from .recompute import LayerGeometry, WeightFn, run_with_recomputed_weight


class NetworkModule(nn.Module):
    """One trainable update of one Linear or Conv2d weight.

    Args:
        lora_name: the file key of the layer, e.g. 'lora_unet_down_blocks_0_attentions_0_proj_in'.
        layer: the wrapped nn.Linear / nn.Conv2d (any subclass).
        rank, alpha: the update is scaled by alpha / rank.
        dropout: dropout probability on the update's input, training only.
        dora: add a DoRA magnitude `dora_scale`.
        options: algorithm options (e.g. lokr_factor).
    """

    algo: ClassVar[str] = ""
    # Parameter names written to the file besides 'alpha' and 'dora_scale'.
    state_keys: ClassVar[tuple[str, ...]] = ()

    def __init__(self, lora_name: str, layer: nn.Module, rank: int, alpha: float,
                 dropout: float = 0.0, dora: bool = False, **options: Any):
        super().__init__()
        # a slot of a fused attention projection acts as a Linear
        if not isinstance(layer, (nn.Linear, nn.Conv2d, ProjectionSlot)):
            raise TypeError(f"{lora_name}: only Linear and Conv2d layers can be wrapped, got {type(layer).__name__}")
        self.lora_name = lora_name
        self._layer = [layer]
        self.weight_shape = tuple(layer.weight.shape)
        self.rank = int(rank)
        self.dropout = float(dropout)
        self.multiplier = 1.0
        self.register_buffer("alpha", torch.tensor(float(alpha)), persistent=True)
        self._saved_forward: Any = None
        self._had_instance_forward = False
        self._attached = False
        self._merged_delta: torch.Tensor | None = None
        device = layer.weight.device
        self.build(**options)
        self.to(device)
        self.dora_scale = nn.Parameter(self.row_norm(layer.weight.detach().float())) if dora else None

    # ---- to be provided by each algorithm -------------------------------------------------
    def build(self, **options: Any) -> None:
        """Create the parameters, initialised so that delta_weight() is zero."""
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:
        """dW with the wrapped weight's shape, scaled by scale(), without multiplier or DoRA: the
        algorithm's own delta_from of its factors."""
        return self.delta_from(*self.factors())

    def factors(self) -> tuple[torch.Tensor, ...] | None:
        """The tensors dW is built from, for `delta_from`; None where the algorithm does not say
        (its forward then never rebuilds dW in backward: see recompute.py)."""
        return None

    def delta_from(self, *factors: torch.Tensor) -> torch.Tensor:
        """delta_weight() computed from the given stand-ins for `factors()` (rebuilt in backward)."""
        raise NotImplementedError

    def bypass(self, x: torch.Tensor) -> torch.Tensor:
        """The update's contribution to the layer output for input x: op(x, dW), no bias."""
        geometry, factors = self.recompute_plan()
        if geometry is not None:
            dtype = x.dtype
            return run_with_recomputed_weight(x, None, geometry, lambda *f: self.delta_from(*f).to(dtype), factors)
        return self.layer_op(x, self.delta_weight().to(x.dtype), None)

    # ---- shared ---------------------------------------------------------------------------
    @property
    def layer(self) -> nn.Module:
        return self._layer[0]

    @property
    def is_conv(self) -> bool:
        return len(self.weight_shape) == 4

    def scale(self) -> float | torch.Tensor:
        """alpha / rank, as the WebUI and sd-scripts compute it."""
        return self.alpha / self.rank

    def layer_op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """The wrapped layer's operation (its stride/padding/dilation) with another weight."""
        if isinstance(self.layer, nn.Conv2d):
            return self.layer._conv_forward(x, weight, bias)
        return F.linear(x, weight, bias)

    @staticmethod
    def row_norm(weight: torch.Tensor) -> torch.Tensor:
        """Norm of each output row (over every axis but the first), shaped (out, 1[, 1, 1]) as dora_scale."""
        return weight.reshape(weight.shape[0], -1).norm(dim=1).reshape(weight.shape[0], *[1] * (weight.dim() - 1))

    def full_delta(self, weight: torch.Tensor) -> torch.Tensor:
        """The total change of `weight` this module applies, multiplier included (what merge adds)."""
        return self.full_delta_of(weight, self.delta_weight(), self.dora_scale, self.multiplier)

    @classmethod
    def full_delta_of(cls, weight: torch.Tensor, delta: torch.Tensor, dora_scale: torch.Tensor | None,
                      multiplier: float) -> torch.Tensor:
        """full_delta for a given dW and DoRA magnitude (the recomputing forward passes stand-ins)."""
        delta = delta.reshape(weight.shape).to(weight.dtype)
        if dora_scale is not None:
            merged = weight + delta
            scale = dora_scale.to(weight.dtype) / cls.row_norm(merged)
            delta = merged * scale - weight
        return delta * multiplier

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._merged_delta is not None or self.multiplier == 0:
            return self.original_forward(x, *args, **kwargs)
        layer = self.layer
        if self.dora_scale is not None:  # DoRA rescales the whole weight: no additive shortcut
            return self.merged_forward(x, dora=True)
        if not (self.training and self.dropout > 0) and self.layer_forward_is_torch() \
                and self.merged_weight_is_cheaper():
            # One op with W + dW (LoHa/LoKr only: see merged_weight_is_cheaper).
            return self.merged_forward(x, dora=False)
        out = self.original_forward(x, *args, **kwargs)
        inp = F.dropout(x, self.dropout) if self.training and self.dropout > 0 else x
        update = self.bypass(inp).to(out.dtype)
        return out + (update if self.multiplier == 1.0 else update * self.multiplier)

    def merged_forward(self, x: torch.Tensor, dora: bool) -> torch.Tensor:
        """op(x, W + full update, bias); rebuilding W + dW in backward where recompute_plan allows."""
        layer, multiplier = self.layer, self.multiplier
        weight = layer.weight
        geometry, factors = self.recompute_plan()
        if geometry is None:
            if dora:
                return self.layer_op(x, weight + self.full_delta(weight.float()).to(weight.dtype), layer.bias)
            return self.layer_op(x, weight + (self.delta_weight() * multiplier).to(weight.dtype), layer.bias)
        if dora:
            return run_with_recomputed_weight(x, layer.bias, geometry, *self.updated_weight_fn(weight))
        return run_with_recomputed_weight(
            x, layer.bias, geometry, lambda *f: weight + (self.delta_from(*f) * multiplier).to(weight.dtype), factors)

    def updated_weight_fn(self, weight: torch.Tensor) -> tuple[WeightFn, tuple[torch.Tensor, ...]]:
        """`weight + full_delta(weight.float())` (DoRA included) as a function of stand-ins for the
        tensors it is built from, and those tensors: what recompute.py rebuilds the weight from."""
        multiplier, dora = self.multiplier, self.dora_scale is not None

        def new_weight(*tensors: torch.Tensor) -> torch.Tensor:
            parts, dora_scale = (tensors[:-1], tensors[-1]) if dora else (tensors, None)
            delta = self.full_delta_of(weight.float(), self.delta_from(*parts), dora_scale, multiplier)
            return weight + delta.to(weight.dtype)
        factors = self.factors() or ()
        return new_weight, (*factors, self.dora_scale) if dora else tuple(factors)

    def recompute_plan(self) -> tuple[LayerGeometry | None, tuple[torch.Tensor, ...]]:
        """The layer geometry and factors for a forward that rebuilds the weight in backward
        (recompute.py), or (None, ()) where the plain op must run: no factors, no gradient wanted
        (nothing is kept then anyway), a base weight that trains (its gradient would be lost), or a
        conv layout the op does not reproduce."""
        factors = self.factors()
        if factors is None or not torch.is_grad_enabled():
            return None, ()
        trained = [*factors, *([self.dora_scale] if self.dora_scale is not None else [])]
        if not any(t.requires_grad for t in trained) or self.layer.weight.requires_grad:
            return None, ()
        return LayerGeometry.of(self.layer), factors

    def layer_forward_is_torch(self) -> bool:
        """Running the layer as op(x, W + dW) skips its own forward: only allowed where that forward
        is torch's own (not a fused-projection slot, not a class-wide patch such as the WebUI's,
        which may be made or undone at any time, so this is asked on every call)."""
        if self._had_instance_forward:
            return False
        module = getattr(type(self.layer).forward, "__module__", "")
        return module == "torch.nn.modules.linear" if isinstance(self.layer, nn.Linear) else \
            module == "torch.nn.modules.conv" and isinstance(self.layer, nn.Conv2d)

    def merged_weight_is_cheaper(self) -> bool:
        """Whether forward should run the layer once with W + dW instead of adding the update's output.

        False here: W + dW is a new weight-sized tensor that autograd keeps for backward, in every
        wrapped layer: a second copy of every wrapped base weight for the whole step. Only an
        algorithm that builds a full dW anyway, from `factors()` that recompute.py rebuilds it from
        in backward, may say True (loha.py, lokr.py): then nothing weight-sized is kept."""
        return False

    def original_forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if self._had_instance_forward:
            return self._saved_forward(x, *args, **kwargs)
        return type(self.layer).forward(self.layer, x, *args, **kwargs)

    # ---- attach / merge -------------------------------------------------------------------
    def attach(self) -> None:
        if self._attached:
            return
        layer = self.layer
        self._had_instance_forward = "forward" in layer.__dict__
        self._saved_forward = layer.__dict__.get("forward")
        layer.forward = self.forward
        self._attached = True

    def detach(self) -> None:
        if not self._attached:
            return
        layer = self.layer
        if self._had_instance_forward:
            layer.forward = self._saved_forward
        else:
            del layer.__dict__["forward"]
        self._saved_forward, self._had_instance_forward, self._attached = None, False, False

    @torch.no_grad()
    def merge(self) -> None:
        """Add the update into the layer's weight (forward then adds nothing on top)."""
        if self._merged_delta is not None:
            return
        weight = self.layer.weight
        delta = self.full_delta(weight.float()).to(weight.dtype)
        weight += delta
        self._merged_delta = delta

    @torch.no_grad()
    def unmerge(self) -> None:
        """Take back exactly the tensor merge() added."""
        if self._merged_delta is None:
            return
        weight = self.layer.weight  # may be a view (ProjectionSlot): change it in place
        weight -= self._merged_delta
        self._merged_delta = None

    @property
    def merged(self) -> bool:
        return self._merged_delta is not None

    def file_state(self) -> dict[str, torch.Tensor]:
        """This module's tensors under their file names (without the lora_name prefix)."""
        return dict(self.state_dict())
