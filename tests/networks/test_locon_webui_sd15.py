"""Our LoCon on the SD1.5 architecture as the WebUI v1.10.1 applies it (issue 17's "NaNs were
produced in Unet" at <lora:NAME:1>).

Findings, offline, on a random SD1.5-size ldm UNet built like tools/genuine_webui/make_checkpoint.py,
with a LoCon trained 2 steps (dim/alpha 4, conv 4/4, lr 1e-3): every key lands on the layer it was
trained on, the WebUI's merge equals our forward (max diff 3e-6), LyCORIS' LoConModule reads the same
tensor names, shapes and change (difference 0), the largest |dW| / |W| is 0.3 %, and the UNet output
stays finite at weight 1 and 10 (README, Compatibility). These tests keep those properties:
- on the full-size SD1.5 ldm UNet (meta device): the WebUI's key rules (webui-api.md 2.3, written
  here) send every key of our LoCon file to the very module our network wrapped, with its shape;
- on a small real ldm UNet: the WebUI's LoCon math (up @ down reshaped, * alpha / dim, merged into
  the weight) gives exactly our training forward, and LyCORIS' own LoConModule reads our tensors.
"""
from __future__ import annotations

import re

import torch
from torch import nn

from lib_lora.config import NetworkConfig
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import create_network, load_network_file, save_network_file

SUFFIX = {"conv1": "in_layers_2", "conv2": "out_layers_3", "norm1": "in_layers_0", "norm2": "out_layers_0",
          "time_emb_proj": "emb_layers_1", "conv_shortcut": "skip_connection"}
LOCON = NetworkConfig(algo="locon", dim=4, alpha=4, conv_dim=4, conv_alpha=4)


def webui_layer_name(key: str, per_level: int = 3) -> str | None:
    """convert_diffusers_name_to_compvis for SD1 UNet keys (the WebUI's network_layer_mapping name)."""
    for pattern, blocks, first in ((r"lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", "input_blocks", 1),
                                   (r"lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)", "output_blocks", 0)):
        m = re.match(pattern, key)
        if m:
            i, kind, j, rest = int(m[1]), m[2], int(m[3]), m[4]
            rest = SUFFIX.get(rest, rest) if kind == "resnets" else rest
            return f"diffusion_model_{blocks}_{first + per_level * i + j}_{1 if kind == 'attentions' else 0}_{rest}"
    m = re.match(r"lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)", key)
    if m:
        rest = SUFFIX.get(m[3], m[3]) if m[1] == "resnets" else m[3]
        return f"diffusion_model_middle_block_{1 if m[1] == 'attentions' else 2 * int(m[2])}_{rest}"
    m = re.match(r"lora_unet_down_blocks_(\d+)_downsamplers_0_conv", key)
    if m:
        return f"diffusion_model_input_blocks_{per_level * (int(m[1]) + 1)}_0_op"
    m = re.match(r"lora_unet_up_blocks_(\d+)_upsamplers_0_conv", key)
    if m:
        return f"diffusion_model_output_blocks_{per_level - 1 + per_level * int(m[1])}_{2 if int(m[1]) > 0 else 1}_conv"
    return None


def webui_mapping(unet: nn.Module) -> dict[str, nn.Module]:
    return {("diffusion_model." + name).replace(".", "_"): module for name, module in unet.named_modules()}


def webui_updown(parts: dict[str, torch.Tensor], weight_shape) -> torch.Tensor:
    """network_lora.calc_updown (rebuild_conventional) + finalize_updown's scale, multiplier 1."""
    up, down = parts["lora_up.weight"].float(), parts["lora_down.weight"].float()
    updown = (up.reshape(up.size(0), -1) @ down.reshape(down.size(0), -1))
    return updown.reshape(weight_shape) * (parts["alpha"].item() / down.shape[0])


def test_every_locon_key_lands_on_the_layer_it_trained_full_size_sd15():
    from ldm.modules.diffusionmodules.openaimodel import UNetModel

    with torch.device("meta"):
        unet = UNetModel(image_size=32, in_channels=4, out_channels=4, model_channels=320,
                         attention_resolutions=[4, 2, 1], num_res_blocks=2, channel_mult=[1, 2, 4, 4], num_heads=8,
                         use_spatial_transformer=True, transformer_depth=1, context_dim=768, legacy=False)
    net = create_network([NetworkTarget("lora_unet", unet, "ldm", "unet")], LOCON)
    mapping = webui_mapping(unet)
    convs3x3 = 0
    for key, module in net._leaf_modules().items():
        layer = mapping.get(webui_layer_name(key) or "")
        assert layer is module.layer, f"{key}: the WebUI applies it to {webui_layer_name(key)}"
        for name, tensor in module.file_state().items():
            if name == "lora_down.weight":
                assert tuple(tensor.shape[1:]) == tuple(layer.weight.shape[1:]) or tensor.dim() == 2
                convs3x3 += tensor.dim() == 4 and tensor.shape[-1] == 3
            if name == "lora_up.weight":
                assert tensor.shape[0] == layer.weight.shape[0]
    assert convs3x3 == 2 * (8 + 2 + 12) + 3 + 3  # conv1/conv2 of 8 down, 2 mid, 12 up resnets; 3 down-, 3 upsamplers


def test_webui_locon_math_is_our_forward_and_lycoris_reads_it(tmp_path):
    import tiny_models
    from lycoris.modules.locon import LoConModule

    unet = tiny_models.ldm_sd1_unet()
    net = create_network([NetworkTarget("lora_unet", unet, "ldm", "unet")], LOCON)
    torch.manual_seed(3)
    with torch.no_grad():  # a trained state: up is no longer zero
        for name, param in net.named_parameters():
            param.add_(torch.randn_like(param) * (0.05 if "lora_up" in name else 0.0))
    tensors, _ = load_network_file(save_network_file(tmp_path / "locon.safetensors", net.trainable_state(), {}, "fp32"))
    x, t, context = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 77, 32)
    net.attach()
    with torch.no_grad():
        ours = unet(x, t, context=context)
    net.detach()

    # the WebUI counts 3 blocks per level (SD's 2 ResBlocks + 1); this small UNet has 1 ResBlock per level
    mapping, groups, per_level = webui_mapping(unet), {}, unet.num_res_blocks[0] + 1
    for key, tensor in tensors.items():
        name, _, part = key.partition(".")
        groups.setdefault(name, {})[part] = tensor
    backups = {}
    for key, parts in groups.items():
        layer = mapping[webui_layer_name(key, per_level)]
        backups[key] = layer.weight.detach().clone()
        with torch.no_grad():
            layer.weight += webui_updown(parts, layer.weight.shape)
        lyco = LoConModule(key, layer, 1.0, parts["lora_down.weight"].shape[0], parts["alpha"].item())
        lyco.load_state_dict(parts, strict=True)
        theirs = lyco.get_diff_weight(multiplier=1)[0].reshape(layer.weight.shape)
        assert torch.allclose(theirs, webui_updown(parts, layer.weight.shape), atol=1e-6), key
    with torch.no_grad():
        merged = unet(x, t, context=context)
        for key in groups:
            mapping[webui_layer_name(key, per_level)].weight.copy_(backups[key])
    assert torch.isfinite(merged).all()
    torch.testing.assert_close(merged, ours, rtol=1e-4, atol=1e-5)
