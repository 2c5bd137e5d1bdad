"""DoRA files in the per-output-row layout, checked against each reader's own formula.

Each reader's rule is written here from its source, independently of lib_lora:
- LyCORIS (lycoris/modules/locon.py, functional/general.py, wd_on_out=True, its default):
  W' = (W + dW) * m / (||W + dW||_row + eps); for LoRA/LoCon its real LoConModule loads our tensors;
- peft (tuners/lora/dora.py, what diffusers' DoRA layers run): the output
  base(x) + (m / ||W + dW||_row - 1) * (W x) + m / ||W + dW||_row * lora(x), magnitude (out,)
  for Linear and (1, out, 1, 1) for Conv2d;
- ComfyUI and Forge (comfy/weight_adapter/base.py weight_decompose): the axis is taken from the
  shape (dora_scale.shape[0] == out), and the per-row branch divides by the norm of the BASE weight W;
- the WebUI v1.10.1 (extensions-builtin/Lora/network.py apply_weight_decompose): per input column
  only, whatever the shape.
dW itself comes from test_files.webui_updown (the WebUI's LoRA/LoHa/LoKr math, tested there).
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib_lora.config import NetworkConfig
from lib_lora.errors import NetworkFileError
from lib_lora.networks import ALGORITHMS, build_metadata, load_network_file, save_network_file
from lib_lora.networks.detect import module_kind
from lib_lora.networks.inspect import inspect_file
from lib_lora.ops.lora_delta import check_supported, group_modules
from test_files import webui_updown

LAYERS = {"linear": lambda: nn.Linear(16, 24), "square": lambda: nn.Linear(24, 24),
          "pointwise": lambda: nn.Conv2d(16, 24, 1), "conv3x3": lambda: nn.Conv2d(16, 24, 3, padding=1)}
ALGOS = [("lora", 4), ("loha", 4), ("lokr", 2)]


def trained_module(algo, dim, layer_kind, seed=0):
    torch.manual_seed(seed)
    layer = LAYERS[layer_kind]()
    module = ALGORITHMS[algo]("lora_unet_x", layer, dim, 3.0, dora=True)
    with torch.no_grad():  # a trained state: factors and magnitude moved away from their init
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return layer, module


def file_parts(module, tmp_path):
    path = save_network_file(tmp_path / "dora.safetensors", {f"lora_unet_x.{k}": v for k, v in
                                                             module.file_state().items()}, {}, "fp32")
    tensors, _ = load_network_file(path)
    return {k.split(".", 1)[1]: v for k, v in tensors.items()}


def plain_delta(parts, weight):
    return webui_updown({k: v for k, v in parts.items() if k != "dora_scale"}, weight, 1.0)


def row_norm(w):
    return w.reshape(w.shape[0], -1).norm(dim=1).reshape(w.shape[0], *[1] * (w.dim() - 1))


def lycoris_weight(parts, weight):
    merged = weight + plain_delta(parts, weight)
    return merged * (parts["dora_scale"] / (row_norm(merged) + torch.finfo(torch.float32).eps))


def comfyui_weight(parts, weight):
    merged = weight + plain_delta(parts, weight)
    scale = parts["dora_scale"]
    if scale.shape[0] == merged.shape[0]:
        norm = row_norm(weight)
    else:
        norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1)
        norm = norm.reshape(merged.shape[1], *[1] * (merged.dim() - 1)).transpose(0, 1)
    return merged * (scale / (norm + torch.finfo(torch.float32).eps))


def webui_v1101_weight(parts, weight):
    merged = weight + plain_delta(parts, weight)
    norm = merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
    norm = norm.reshape(merged.shape[1], *[1] * (merged.dim() - 1)).transpose(0, 1)
    return merged * (parts["dora_scale"] / norm)


def layer_input(layer):
    torch.manual_seed(9)
    return torch.randn(2, 16 if layer.weight.shape[1] == 16 else 24, *((6, 6) if layer.weight.dim() == 4 else ()))


def run_layer(layer, x, weight):
    if isinstance(layer, nn.Conv2d):
        return layer._conv_forward(x, weight, layer.bias)
    return F.linear(x, weight, layer.bias)


@pytest.mark.parametrize("layer_kind", list(LAYERS))
@pytest.mark.parametrize("algo,dim", ALGOS)
def test_file_layout_and_lycoris_formula_match_training(tmp_path, algo, dim, layer_kind):
    layer, module = trained_module(algo, dim, layer_kind)
    parts = file_parts(module, tmp_path)
    weight = layer.weight.detach()
    out = weight.shape[0]
    assert tuple(parts["dora_scale"].shape) == (out, *[1] * (weight.dim() - 1))
    expected = lycoris_weight(parts, weight)
    x = layer_input(layer)
    module.attach()
    try:
        trained = layer(x)  # our training forward
    finally:
        module.detach()
    assert torch.allclose(trained, run_layer(layer, x, expected), atol=1e-5)
    module.merge()  # our merge
    assert torch.allclose(layer.weight, expected, atol=1e-5)
    module.unmerge()


@pytest.mark.parametrize("layer_kind", list(LAYERS))
def test_lycoris_module_loads_our_dora(tmp_path, layer_kind):
    """LyCORIS' own LoConModule (wd_on_out default) loads the tensors and merges the same weight."""
    from lycoris.modules.locon import LoConModule

    layer, module = trained_module("lora", 4, layer_kind)
    parts = file_parts(module, tmp_path)
    lyco = LoConModule("lora_unet_x", layer, 1.0, 4, 3.0, weight_decompose=True)
    lyco.load_state_dict(parts, strict=True)
    weight = layer.weight.detach()
    theirs = lyco.get_merged_weight(multiplier=1)[0].reshape(weight.shape)
    assert torch.allclose(theirs, weight + module.full_delta(weight), atol=1e-5)


@pytest.mark.parametrize("layer_kind", list(LAYERS))
def test_peft_dora_output_matches_training_forward(tmp_path, layer_kind):
    layer, module = trained_module("lora", 4, layer_kind)
    parts = file_parts(module, tmp_path)
    weight, x = layer.weight.detach(), layer_input(layer)
    down, up = parts["lora_down.weight"], parts["lora_up.weight"]
    scaling = parts["alpha"].item() / down.shape[0]
    lora_weight = (up.reshape(up.shape[0], -1) @ down.reshape(down.shape[0], -1)).reshape(weight.shape)
    channel = (1, -1, 1, 1) if weight.dim() == 4 else (1, -1)
    magnitude = parts["dora_scale"].reshape(channel)  # peft's lora_magnitude_vector
    norm = (weight + scaling * lora_weight).reshape(weight.shape[0], -1).norm(dim=1).reshape(channel)
    base_result = run_layer(layer, x, weight) - (layer.bias.reshape(channel) if layer.bias is not None else 0)
    lora_result = run_layer(layer, x, lora_weight) - (layer.bias.reshape(channel) if layer.bias is not None else 0)
    peft = run_layer(layer, x, weight) + (magnitude / norm - 1) * base_result + magnitude / norm * lora_result * scaling
    module.attach()
    try:
        assert torch.allclose(layer(x), peft, atol=1e-5)
    finally:
        module.detach()


@pytest.mark.parametrize("algo,dim", ALGOS)
def test_comfyui_forge_take_the_row_branch(tmp_path, algo, dim):
    """ComfyUI/Forge see the per-row layout by shape; their per-row branch divides by the base weight's
    row norm, so they differ from LyCORIS/peft/ours exactly by ||W + dW||_row / ||W||_row per row."""
    layer, module = trained_module(algo, dim, "square")  # out == in: the shape alone must decide
    parts = file_parts(module, tmp_path)
    weight = layer.weight.detach()
    ours = weight + module.full_delta(weight)
    ratio = row_norm(weight + plain_delta(parts, weight)) / row_norm(weight)
    assert torch.allclose(comfyui_weight(parts, weight), ours * ratio, atol=1e-5)


def test_webui_v1101_reads_only_the_per_input_layout(tmp_path):
    """The WebUI v1.10.1 normalises per input column whatever the shape: an untrained per-row DoRA
    (which must change nothing) comes out changed there. Recorded in the README's compatibility table."""
    torch.manual_seed(0)
    layer = nn.Linear(16, 24)
    module = ALGORITHMS["lora"]("lora_unet_x", layer, 4, 3.0, dora=True)
    parts = file_parts(module, tmp_path)
    weight = layer.weight.detach()
    assert torch.allclose(weight + module.full_delta(weight), weight, atol=1e-6)
    assert torch.allclose(lycoris_weight(parts, weight), weight, atol=1e-5)
    assert not torch.allclose(webui_v1101_weight(parts, weight), weight, atol=1e-2)


def test_metadata_says_per_output_row():
    args = json.loads(build_metadata(NetworkConfig(algo="locon", dora=True), "sd1", title="t")["ss_network_args"])
    assert args["dora_wd"] == "True" and args["wd_on_output"] == "True"


def test_old_per_input_layout_files_still_read(tmp_path, sd1_unet):
    """A file of the older layout: inspect reads and labels it, merge/resize refuse it with a clear
    message (DoRA needs the base weight), and training refuses to continue from it."""
    from lib_lora.networks.target import NetworkTarget
    from lib_lora.networks import create_network

    torch.manual_seed(0)
    old = {"lora_unet_x.lora_down.weight": torch.randn(4, 24), "lora_unet_x.lora_up.weight": torch.randn(24, 4),
           "lora_unet_x.alpha": torch.tensor(3.0), "lora_unet_x.dora_scale": torch.rand(1, 24) + 0.5}
    path = save_network_file(tmp_path / "old.safetensors", old, {}, "fp16")
    report = inspect_file(path, None)
    assert report.algorithms == {"lora+dora(per-input)": 1}
    tensors, _ = load_network_file(path)
    module = group_modules(tensors)["lora_unet_x"]
    assert module_kind(module.parts).dora_per_input
    with pytest.raises(NetworkFileError, match="per input column"):
        check_supported(module)

    net = create_network([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")],
                         NetworkConfig(algo="lora", dim=4, dora=True))
    state = dict(net.trainable_state())
    key = next(k for k in state if k.endswith(".dora_scale") and state[k].shape[0] > 1)
    state[key] = state[key].reshape(1, -1)  # the same numbers in the old layout's shape
    with pytest.raises(NetworkFileError, match="per input column"):
        net.load_trainable_state(state)
