"""LoraNetwork: the set of per-layer modules over a model's UNet and text encoders.

`create_network(targets, cfg)` scans each NetworkTarget's module tree, keeps the
layers sd-scripts would train (selection below), names each by its sd-scripts
file key (keys.py) and wraps it in the configured algorithm. Building changes
nothing in the model; `attach()` swaps the layers' forwards, `detach()` restores
them exactly; `merge()`/`unmerge()` move the update in and out of the weights.

Selection, on diffusers-style names whatever the model's own naming:
- 'attn': Transformer2DModel / SpatialTransformer proj_in, proj_out, attn1/attn2 q, k, v, out;
- 'attn_ff': plus the feed-forward ff.net.0.proj, ff.net.2 (sd-scripts' default set);
- 'attn_ff_conv' (also implied by algo 'locon'): plus ResnetBlock2D/ResBlock conv1, conv2,
  time_emb_proj, conv_shortcut and the down/upsampler convs (LoCon's set).
- text encoders: every CLIPAttention q/k/v/out_proj and CLIPMLP fc1/fc2 (OpenCLIP: the
  MultiheadAttention as four updates, mlp c_fc/c_proj).
Rank and alpha: 3x3 convs use conv_dim/conv_alpha; Linear and 1x1 convs use dim/alpha.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..config import NetworkConfig
from ..errors import ModelError, NetworkFileError
from . import keys
from .base import NetworkModule
from .mha import MultiheadAttentionAdapter
from .registry import ALGORITHMS
from .target import NetworkTarget


class LoraNetwork(nn.Module):
    """The trainable network. `modules_by_key` maps file key -> NetworkModule (or MHA adapter)."""

    def __init__(self, modules: dict[str, nn.Module], kinds: dict[str, str], algo: str):
        super().__init__()
        self.lora_modules = nn.ModuleDict(modules)
        self.kinds = dict(kinds)
        self.algo = algo
        self.multiplier = 1.0

    # ---- lifecycle ------------------------------------------------------------------------
    def attach(self) -> None:
        """Route every wrapped layer's forward through its module (idempotent)."""
        for module in self.lora_modules.values():
            module.attach()

    def detach(self) -> None:
        """Give every wrapped layer back its own forward; unmerges first if merged."""
        self.unmerge()
        for module in self.lora_modules.values():
            module.detach()

    def set_multiplier(self, multiplier: float) -> None:
        self.multiplier = float(multiplier)
        for module in self.lora_modules.values():
            module.multiplier = self.multiplier

    def merge(self) -> None:
        for module in self.lora_modules.values():
            module.merge()

    def unmerge(self) -> None:
        for module in self.lora_modules.values():
            module.unmerge()

    # ---- training -------------------------------------------------------------------------
    def param_groups(self, unet_lr: float, text_encoder_lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: one for the UNet, one for the text encoders; a group whose lr is 0
        or that has no parameters is left out (its modules then stay at init)."""
        groups = []
        for kind, lr in (("unet", unet_lr), ("text_encoder", text_encoder_lr)):
            params = [p for key, m in self.lora_modules.items() if self.kinds[key] == kind
                      for p in m.parameters() if p.requires_grad]
            if lr > 0 and params:
                groups.append({"params": params, "lr": float(lr), "name": kind})
        return groups

    def module_names(self) -> list[str]:
        """File keys of every wrapped layer (an OpenCLIP attention counts as its four keys)."""
        names: list[str] = []
        for key, module in self.lora_modules.items():
            names.extend(module.file_keys() if isinstance(module, MultiheadAttentionAdapter) else [key])
        return names

    # ---- state ----------------------------------------------------------------------------
    def _leaf_modules(self) -> dict[str, NetworkModule]:
        leaves: dict[str, NetworkModule] = {}
        for key, module in self.lora_modules.items():
            if isinstance(module, MultiheadAttentionAdapter):
                leaves.update(module.leaf_modules())
            else:
                leaves[key] = module
        return leaves

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every tensor under its file key ('<lora_name>.lora_down.weight', '<lora_name>.alpha'), fp32, CPU."""
        state = {}
        for key, module in self._leaf_modules().items():
            for name, tensor in module.file_state().items():
                state[f"{key}.{name}"] = tensor.detach().float().cpu().clone()
        return state

    def load_trainable_state(self, state: dict[str, torch.Tensor], strict: bool = True) -> None:
        """Load tensors by file key (from trainable_state() or a file of the same network).

        strict: missing or unexpected keys raise NetworkFileError; otherwise they are skipped.
        Shapes must match (a 2-D tensor fits a 1x1 conv's 4-D weight of the same size)."""
        leaves = self._leaf_modules()
        expected = {f"{k}.{n}" for k, m in leaves.items() for n in m.file_state()}
        missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
        if strict and (missing or unexpected):
            raise NetworkFileError(
                f"The LoRA tensors do not fit this network: {len(missing)} missing "
                f"(e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})",
                where=f"{self.algo} network with {len(leaves)} modules",
                fix="Use a file trained with the same algorithm, targets and base model family, "
                    "or load with strict=False to take only the matching tensors")
        with torch.no_grad():
            for full_key in sorted(expected & state.keys()):
                lora_name, _, tensor_name = full_key.partition(".")
                _copy_tensor(leaves[lora_name], tensor_name, state[full_key], full_key)


def _copy_tensor(module: NetworkModule, tensor_name: str, value: torch.Tensor, full_key: str) -> None:
    target = module.get_parameter(tensor_name) if tensor_name != "alpha" else module.alpha
    if tensor_name == "dora_scale" and value.dim() >= 2 and value.shape[0] == 1 < target.shape[0]:
        raise NetworkFileError(f"Tensor {full_key} holds the DoRA magnitude per input column {tuple(value.shape)} "
                               "(the older layout); training keeps it per output row", where=full_key,
                               fix="Start a new DoRA run; the old file still works for inspect, merge and resize")
    if target.numel() != value.numel() or (target.dim() > 0 and value.dim() == 0):
        raise NetworkFileError(f"Tensor {full_key} has shape {tuple(value.shape)}, the network needs "
                               f"{tuple(target.shape)}", where=full_key,
                               fix="The file was trained with another rank or on another model; "
                                   "train with matching dim/conv_dim or use a file for this model")
    target.copy_(value.reshape(target.shape).to(target.dtype))


def create_network(targets: list[NetworkTarget], cfg: NetworkConfig) -> LoraNetwork:
    """Build (not attach) the network for `targets` as configured by `cfg`.

    Raises ModelError when the configuration selects no layer at all."""
    if cfg.algo not in ALGORITHMS:
        raise ModelError(f"Unknown network algorithm {cfg.algo!r}", where="network.algo",
                         fix=f"Use one of {', '.join(sorted(ALGORITHMS))}")
    module_cls = ALGORITHMS[cfg.algo]
    modules: dict[str, nn.Module] = {}
    kinds: dict[str, str] = {}
    for target in targets:
        if (target.kind == "unet" and not cfg.train_unet) or (target.kind != "unet" and not cfg.train_text_encoder):
            continue
        for key, layer, conv3x3 in select_layers(target, cfg):
            if key in modules:
                raise ModelError(f"Two layers map to the same LoRA key {key}", where=target.prefix,
                                 fix="Pass each model part once in the network targets")
            rank, alpha = (cfg.conv_dim, cfg.conv_alpha) if conv3x3 else (cfg.dim, cfg.alpha)
            options = dict(dropout=cfg.dropout, dora=cfg.dora, lokr_factor=cfg.lokr_factor)
            if isinstance(layer, nn.MultiheadAttention):
                modules[key] = MultiheadAttentionAdapter(key, layer, module_cls, rank, alpha, **options)
            else:
                modules[key] = module_cls(key, layer, rank, alpha, **options)
            kinds[key] = target.kind
    if not modules:
        raise ModelError("The network selects no layer of the model",
                         where=", ".join(f"{t.prefix} ({t.naming})" for t in targets) or "no targets",
                         fix="Check network.train_unet/train_text_encoder, network.targets and "
                             "network.block_include/block_exclude")
    return LoraNetwork(modules, kinds, cfg.algo)


def select_layers(target: NetworkTarget, cfg: NetworkConfig) -> list[tuple[str, nn.Module, bool]]:
    """(file key, layer, is 3x3 conv) for each layer of `target` the config trains."""
    named = list(target.root.named_modules())
    if target.kind == "unet":
        return _select_unet(named, target.naming, cfg)
    return _select_text_encoder(named, target.prefix, target.naming)


def _split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _select_unet(named: list[tuple[str, nn.Module]], naming: str, cfg: NetworkConfig):
    layout = keys.UNetLayout.from_module_names([n for n, _ in named], naming)
    targets = "attn_ff_conv" if cfg.algo == "locon" else cfg.targets
    include, exclude = _split_list(cfg.block_include), _split_list(cfg.block_exclude)
    chosen = []
    for name, layer in named:
        if not isinstance(layer, (nn.Linear, nn.Conv2d)):
            continue
        if naming == "diffusers":
            diffusers_name = keys.strip_unet_prefix(name)
        else:
            diffusers_name = keys.ldm_to_diffusers_name(name, layout.layers_per_block)
        if diffusers_name is None or not keys.is_unet_target(diffusers_name, targets):
            continue
        key = keys.unet_key(name, naming, layout)
        if key is None:
            continue
        spellings = (key, name, diffusers_name, diffusers_name.replace(".", "_"))
        if include and not any(word in s for word in include for s in spellings):
            continue
        if any(word in s for word in exclude for s in spellings):
            continue
        conv3x3 = isinstance(layer, nn.Conv2d) and tuple(layer.kernel_size) != (1, 1)
        chosen.append((key, layer, conv3x3))
    return chosen


def _select_text_encoder(named: list[tuple[str, nn.Module]], prefix: str, naming: str):
    chosen = []
    for name, layer in named:
        if naming == "hf_clip":
            canonical = keys.hf_clip_canonical_name(name)
            if isinstance(layer, nn.Linear) and canonical and keys.TE_LINEAR_RE.match(canonical):
                chosen.append((keys.te_key(prefix, naming, name), layer, False))
        elif isinstance(layer, nn.MultiheadAttention) and keys.open_clip_mha_keys(prefix, name):
            chosen.append((keys.open_clip_mha_keys(prefix, name)[0].rsplit("_q_proj", 1)[0], layer, False))
        elif isinstance(layer, nn.Linear) and name.endswith(("mlp.c_fc", "mlp.c_proj")):
            key = keys.te_key(prefix, naming, name)
            if key:
                chosen.append((key, layer, False))
    return chosen
