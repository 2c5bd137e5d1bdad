"""Stand-in of the built-in Lora extension's `networks` module (extensions-builtin/Lora).

The state Train LoRA must clean up: `loaded_networks`, and LoRA weights merged INTO the
model's Linear/Conv weights in place, with the originals kept in `network_weights_backup`
/ `network_bias_backup` and the merged set in `network_current_names`. As in the real
module, the merge happens lazily inside the class-wide patched forwards of torch.nn.Linear,
Conv2d, GroupNorm, LayerNorm and MultiheadAttention (network_Linear_forward ..., installed by
lora_script.py through lora_patches.py, originals in `originals`); `apply_networks(sd_model)`
(stand-in only, called by processing before sampling) does the same for every named layer.
Only plain LoRA (lora_up/lora_down/alpha) is read; unknown keys go to `unmatched_keys`.
`available_networks` maps names to NetworkOnDisk; `load_network(name, network_on_disk)` and
`convert_diffusers_name_to_compvis(key, is_sd2)` have v1.10.1's signatures and key rules.
OpenCLIP attention (SD2, SDXL's bigG) is an nn.MultiheadAttention with one fused
in_proj_weight: as in the real loader, `..._attn_q_proj/k_proj/v_proj` keys attach to the
attention module and are merged into in_proj_weight (with `..._attn_out_proj` into
out_proj.weight) only when all four are present; MultiheadAttention never calls its
out_proj's forward, so out_proj is not merged as a Linear of its own.
"""
from __future__ import annotations

import os
import re

import torch

from modules import devices, shared

originals = None   # lora_patches.LoraPatches, set by lora_script (the torch.nn originals)
loaded_networks: list = []
available_networks: dict = {}
unmatched_keys: list[str] = []

PATCHED_LAYERS = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.MultiheadAttention)
RE_X_PROJ = re.compile(r"(.*)_([qkv]_proj)$")
RESNET_SUFFIXES = {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0",
                   "norm2": "out_layers_0", "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}


class NetworkOnDisk:
    """A LoRA file the Lora folder holds (v1.10.1 network.NetworkOnDisk; no metadata or hashes here)."""

    def __init__(self, name, filename):
        self.name, self.filename, self.alias = name, filename, name


class Network:
    """A loaded network: its modules' tensors by layer name (v1.10.1 network.Network(name, network_on_disk))."""

    def __init__(self, name, network_on_disk):
        self.name, self.network_on_disk = name, network_on_disk
        self.te_multiplier = self.unet_multiplier = self.dyn_dim = 1.0
        self.modules: dict[str, dict[str, torch.Tensor]] = {}
        self.mtime = None


def list_available_networks():
    available_networks.clear()
    folder = shared.cmd_opts.lora_dir
    for root, _, files in os.walk(folder):
        for filename in files:
            if filename.endswith((".safetensors", ".pt", ".ckpt")):
                name = os.path.splitext(filename)[0]
                available_networks[name] = NetworkOnDisk(name, os.path.join(root, filename))


def assign_network_names_to_compvis_modules(sd_model):
    mapping = {}
    if getattr(sd_model, "conditioner", None) is not None:
        for i, embedder in enumerate(sd_model.conditioner.embedders):
            for name, module in getattr(embedder, "wrapped", embedder).named_modules():
                mapping[f"{i}_{name.replace('.', '_')}"] = module
    else:
        for name, module in sd_model.cond_stage_model.wrapped.named_modules():
            mapping[name.replace(".", "_")] = module
    for name, module in sd_model.model.named_modules():
        mapping[name.replace(".", "_")] = module
    for name, module in mapping.items():
        module.network_layer_name = name
    sd_model.network_layer_mapping = mapping


# UNet blocks per level of the loaded model: v1.10.1 writes 3 into its arithmetic (two ResBlocks and a
# down/upsampler per level in every SD1/SD2 checkpoint). Stand-in only: the tiny UNet has one ResBlock
# per level, so load_network sets this from the model it loads into before converting any key.
blocks_per_level = 3


def convert_diffusers_name_to_compvis(key, is_sd2):
    """A diffusers-style (sd-scripts) LoRA key -> the model's network_layer_name; unknown keys unchanged."""
    n = blocks_per_level
    m = re.match(r"lora_unet_conv_in(.*)", key)
    if m:
        return f"diffusion_model_input_blocks_0_0{m.group(1)}"
    m = re.match(r"lora_unet_conv_out(.*)", key)
    if m:
        return f"diffusion_model_out_2{m.group(1)}"
    m = re.match(r"lora_unet_time_embedding_linear_(\d+)(.*)", key)
    if m:
        return f"diffusion_model_time_embed_{int(m.group(1)) * 2 - 2}{m.group(2)}"
    m = re.match(r"lora_unet_(down|up)_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        side, i, kind, j, rest = m.group(1), int(m.group(2)), m.group(3), int(m.group(4)), m.group(5)
        rest = RESNET_SUFFIXES.get(rest, rest) if kind == "resnets" else rest
        index = (1 + n * i + j) if side == "down" else (n * i + j)
        blocks = "input_blocks" if side == "down" else "output_blocks"
        return f"diffusion_model_{blocks}_{index}_{1 if kind == 'attentions' else 0}_{rest}"
    m = re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        kind, j, rest = m.group(1), int(m.group(2)), m.group(3)
        rest = RESNET_SUFFIXES.get(rest, rest) if kind == "resnets" else rest
        return f"diffusion_model_middle_block_{1 if kind == 'attentions' else 2 * j}_{rest}"
    m = re.match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", key)
    if m:
        return f"diffusion_model_input_blocks_{n * (int(m.group(1)) + 1)}_0_op"
    m = re.match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", key)
    if m:
        level = int(m.group(1))
        return f"diffusion_model_output_blocks_{n - 1 + n * level}_{2 if level > 0 else 1}_conv"
    m = re.match(r"lora_te_text_model_encoder_layers_(\d+)_(.+)", key)
    if m:
        if is_sd2:
            rest = m.group(2).replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj")
            return f"model_transformer_resblocks_{m.group(1)}_{rest.replace('self_attn', 'attn')}"
        return f"transformer_text_model_encoder_layers_{m.group(1)}_{m.group(2)}"
    m = re.match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", key)
    if m:
        rest = m.group(2).replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj")
        return f"1_model_transformer_resblocks_{m.group(1)}_{rest.replace('self_attn', 'attn')}"
    return key


def _module_for(key, mapping, is_sd2):
    """The layer name a file key attaches to, tried in v1.10.1 load_network's order; None if none."""
    for candidate in (convert_diffusers_name_to_compvis(key, is_sd2),
                      key.replace("lora_unet_", "diffusion_model_", 1),
                      key.replace("lora_te1_text_model", "0_transformer_text_model", 1),
                      key.replace("lora_te1_text_model", "transformer_text_model", 1)):
        if candidate in mapping:
            return candidate
        fused = RE_X_PROJ.match(candidate)     # q/k/v of a MultiheadAttention
        if fused and isinstance(mapping.get(fused.group(1)), torch.nn.MultiheadAttention):
            return candidate
    return None


def load_network(name, network_on_disk):
    """Read the file into a Network matched against shared.sd_model's layer names."""
    import safetensors.torch
    global blocks_per_level
    net = Network(name, network_on_disk)
    net.mtime = os.path.getmtime(network_on_disk.filename)
    sd_model = shared.sd_model
    if not hasattr(sd_model, "network_layer_mapping"):
        assign_network_names_to_compvis_modules(sd_model)
    mapping = sd_model.network_layer_mapping
    is_sd2 = "model_transformer_resblocks" in mapping     # OpenCLIP's blocks as SD2's text encoder
    blocks_per_level = getattr(sd_model.model.diffusion_model, "num_res_blocks", [2])[0] + 1
    for key, tensor in safetensors.torch.load_file(network_on_disk.filename).items():
        module_key, _, part = key.partition(".")
        sd_key = _module_for(module_key, mapping, is_sd2)
        if sd_key is None:
            unmatched_keys.append(key)
            continue
        net.modules.setdefault(sd_key, {})[part] = tensor
    return net


def load_networks(names, te_multipliers=None, unet_multipliers=None, dyn_dims=None):
    loaded_networks.clear()
    for i, name in enumerate(names):
        if name not in available_networks:
            list_available_networks()
        if name not in available_networks:
            continue
        net = load_network(name, available_networks[name])
        net.te_multiplier = te_multipliers[i] if te_multipliers else 1.0
        net.unet_multiplier = unet_multipliers[i] if unet_multipliers else 1.0
        loaded_networks.append(net)


def _store_weights_backup(weight):
    return None if weight is None else weight.to(devices.cpu, copy=True)


def _restore_weights_backup(obj, field, weight):
    if weight is None:
        setattr(obj, field, None)
        return
    getattr(obj, field).copy_(weight)


def network_restore_weights_from_backup(self):
    """Put the layer's real weights back (MultiheadAttention: (in_proj_weight, out_proj.weight),
    bias of out_proj)."""
    weights_backup = getattr(self, "network_weights_backup", None)
    bias_backup = getattr(self, "network_bias_backup", None)
    if weights_backup is None and bias_backup is None:
        return
    is_attention = isinstance(self, torch.nn.MultiheadAttention)
    if weights_backup is not None:
        if is_attention:
            _restore_weights_backup(self, "in_proj_weight", weights_backup[0])
            _restore_weights_backup(self.out_proj, "weight", weights_backup[1])
        else:
            _restore_weights_backup(self, "weight", weights_backup)
    _restore_weights_backup(self.out_proj if is_attention else self, "bias", bias_backup)


def _updown(shape, parts, multiplier):
    up, down = parts["lora_up.weight"].float(), parts["lora_down.weight"].float()
    scale = float(parts["alpha"]) / down.shape[0] if "alpha" in parts else 1.0
    if up.dim() == 4 and down.shape[2:] != (1, 1):
        delta = torch.nn.functional.conv2d(down.permute(1, 0, 2, 3), up).permute(1, 0, 2, 3)
    else:
        delta = (up.flatten(1) @ down.flatten(1)).reshape(shape)
    return delta * scale * multiplier


def _merge_attention(self, name, net, mult):
    """q/k/v stacked into in_proj_weight, out into out_proj.weight; all four or nothing."""
    parts = [net.modules.get(f"{name}_{p}_proj") for p in ("q", "k", "v", "out")]
    if not all(part and "lora_up.weight" in part for part in parts):
        return
    e = self.embed_dim
    qkv = torch.vstack([_updown((e, e), part, mult) for part in parts[:3]])
    self.in_proj_weight += qkv.to(self.in_proj_weight.device, self.in_proj_weight.dtype)
    out = self.out_proj.weight
    out += _updown(out.shape, parts[3], mult).to(out.device, out.dtype)


def _take_backups(self, current, wanted):
    """The first time a network applies to a layer: CPU copies of its weight and bias."""
    is_attention = isinstance(self, torch.nn.MultiheadAttention)
    if getattr(self, "network_weights_backup", None) is None and wanted != ():
        if current != () and not (isinstance(self, torch.nn.LayerNorm) and not self.elementwise_affine):
            raise RuntimeError(f"{self.network_layer_name} - no backup weights found and current weights are "
                               "not unchanged")
        self.network_weights_backup = ((_store_weights_backup(self.in_proj_weight),
                                        _store_weights_backup(self.out_proj.weight)) if is_attention
                                       else _store_weights_backup(self.weight))
    if getattr(self, "network_bias_backup", None) is None and wanted != ():
        bias = self.out_proj.bias if is_attention else getattr(self, "bias", None)
        if bias is not None and current != ():
            raise RuntimeError("no backup bias found and current bias are not unchanged")
        self.network_bias_backup = _store_weights_backup(bias)


def network_apply_weights(self):
    """Merge the loaded networks into this layer's weight, in place, when the wanted set changed:
    backups first, then restore from them and add each network's update (plain LoRA only here)."""
    name = getattr(self, "network_layer_name", None)
    if name is None:
        return
    current = getattr(self, "network_current_names", ())
    wanted = tuple((n.name, n.te_multiplier, n.unet_multiplier, n.dyn_dim) for n in loaded_networks)
    with torch.no_grad():
        _take_backups(self, current, wanted)
        if current == wanted:
            return
        network_restore_weights_from_backup(self)
        for net in loaded_networks:
            mult = net.te_multiplier if "transformer" in name[:20] else net.unet_multiplier
            if isinstance(self, torch.nn.MultiheadAttention):
                _merge_attention(self, name, net, mult)
                continue
            parts = net.modules.get(name)
            if parts and "lora_up.weight" in parts and isinstance(self, (torch.nn.Linear, torch.nn.Conv2d)):
                self.weight += _updown(self.weight.shape, parts, mult).to(self.weight.device, self.weight.dtype)
    self.network_current_names = wanted


def network_reset_cached_weight(self):
    self.network_current_names = ()
    self.network_weights_backup = None
    self.network_bias_backup = None


# The class-wide patches lora_patches.LoraPatches installs: merge (if the loaded set changed), then
# run torch's own forward kept in `originals`; loading a state dict forgets the layer's backups.
def network_Linear_forward(self, input):
    network_apply_weights(self)
    return originals.Linear_forward(self, input)


def network_Linear_load_state_dict(self, *args, **kwargs):
    network_reset_cached_weight(self)
    return originals.Linear_load_state_dict(self, *args, **kwargs)


def network_Conv2d_forward(self, input):
    network_apply_weights(self)
    return originals.Conv2d_forward(self, input)


def network_Conv2d_load_state_dict(self, *args, **kwargs):
    network_reset_cached_weight(self)
    return originals.Conv2d_load_state_dict(self, *args, **kwargs)


def network_GroupNorm_forward(self, input):
    network_apply_weights(self)
    return originals.GroupNorm_forward(self, input)


def network_GroupNorm_load_state_dict(self, *args, **kwargs):
    network_reset_cached_weight(self)
    return originals.GroupNorm_load_state_dict(self, *args, **kwargs)


def network_LayerNorm_forward(self, input):
    network_apply_weights(self)
    return originals.LayerNorm_forward(self, input)


def network_LayerNorm_load_state_dict(self, *args, **kwargs):
    network_reset_cached_weight(self)
    return originals.LayerNorm_load_state_dict(self, *args, **kwargs)


def network_MultiheadAttention_forward(self, *args, **kwargs):
    network_apply_weights(self)
    return originals.MultiheadAttention_forward(self, *args, **kwargs)


def network_MultiheadAttention_load_state_dict(self, *args, **kwargs):
    network_reset_cached_weight(self)
    return originals.MultiheadAttention_load_state_dict(self, *args, **kwargs)


def apply_networks(sd_model):
    """Stand-in only: what the real patched forwards do on the next generation."""
    if not hasattr(sd_model, "network_layer_mapping"):
        assign_network_names_to_compvis_modules(sd_model)
    mapping = sd_model.network_layer_mapping.values()
    attention_outputs = {id(m.out_proj) for m in mapping if isinstance(m, torch.nn.MultiheadAttention)}
    for module in mapping:
        # the layers whose forwards are patched; an out_proj is merged by its MultiheadAttention
        if isinstance(module, PATCHED_LAYERS) and id(module) not in attention_outputs:
            network_apply_weights(module)
