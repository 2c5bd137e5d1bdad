"""Full-size SDXL base: our LoRA, LoCon, LoHa and LoKr files map key for key in three outside readers.

The models are built from the shipped SDXL-base configs on the meta device (shapes and module
names, no memory); the network's own tensors are then made real. Readers, each written from its
source (tests/networks/sdxl_reference_names.py holds the names they see):
- the WebUI v1.10.1 loader (webui-api.md 2.3): key -> network_layer_mapping name, q/k/v of
  OpenCLIP's attention onto its nn.MultiheadAttention (all four parts present), and each update
  fits the weight it lands on (numel, output rows);
- diffusers' SDXL `lora_state_dict` (LoRA and LoCon; diffusers has no LoHa/LoKr): every converted
  key names a real module of the UNet or of one of the two text encoders;
- ComfyUI's comfy/lora.py name map: every module key is in it and every tensor part is one its
  load_lora reads, so no "lora key not loaded" warning.
"""
from __future__ import annotations

import re

import pytest
import torch

from lib_lora.config import NetworkConfig
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import create_network
from sdxl_reference_names import comfyui_key_map, sgm_unet_layers, webui_te_modules
from test_files import diffusers_module_name

CONFIGS = "lib_lora/models/configs/sdxl_base"
COMFY_PARTS = re.compile(r"^(lora_(up|down|mid)\.weight|alpha|hada_(w[12]_[ab]|t[12])|lokr_(w[12]|w[12]_[ab]|t2))$")
ALGOS = {"lora": "attn_ff", "locon": "attn_ff_conv", "loha": "attn_ff_conv", "lokr": "attn_ff_conv"}


@pytest.fixture(scope="module")
def sdxl_meta():
    return build_sdxl_meta()


def build_sdxl_meta():
    """The SDXL-base UNet and both text encoders on the meta device (tools/sdxl_one_step_check.py too)."""
    from pathlib import Path

    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    root = Path(__file__).resolve().parents[2] / CONFIGS
    with torch.device("meta"):
        unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(str(root / "unet")))
        te1 = CLIPTextModel(CLIPTextConfig.from_pretrained(str(root / "text_encoder")))
        te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(str(root / "text_encoder_2")))
    return unet, te1, te2


def file_tensors(sdxl_meta, algo: str) -> dict[str, torch.Tensor]:
    """The tensors our SDXL file of this algorithm holds (dim 4 / alpha 2, conv_dim 2 / conv_alpha 1)."""
    unet, te1, te2 = sdxl_meta
    targets = [NetworkTarget("lora_unet", unet, "diffusers", "unet"),
               NetworkTarget("lora_te1", te1, "hf_clip", "text_encoder"),
               NetworkTarget("lora_te2", te2, "hf_clip", "text_encoder")]
    net = create_network(targets, NetworkConfig(algo=algo, dim=4, alpha=2, conv_dim=2, conv_alpha=1,
                                                targets=ALGOS[algo]))
    net.to_empty(device="cpu")  # built beside meta layers: give the network's own tensors memory
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.05)
        for module in net.modules():
            if isinstance(getattr(module, "alpha", None), torch.Tensor) and hasattr(module, "rank"):
                module.alpha.fill_(2.0 if module.rank == 4 else 1.0)
    return net.trainable_state()


def group(tensors):
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        name, _, part = key.partition(".")
        modules.setdefault(name, {})[part] = tensor
    return modules


def update_numel_and_rows(parts: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(numel, output rows) of the weight change each reader rebuilds from these parts."""
    if "lora_up.weight" in parts:
        up, down = parts["lora_up.weight"], parts["lora_down.weight"]
        return up.shape[0] * down[0].numel(), up.shape[0]
    if "hada_w1_a" in parts:
        return parts["hada_w1_a"].shape[0] * parts["hada_w1_b"].shape[1], parts["hada_w1_a"].shape[0]
    w1 = parts["lokr_w1"].shape if "lokr_w1" in parts else (parts["lokr_w1_a"].shape[0], parts["lokr_w1_b"].shape[1])
    if "lokr_w2" in parts:
        w2_rows, w2_numel = parts["lokr_w2"].shape[0], parts["lokr_w2"].numel()
    else:
        w2_rows, w2_numel = parts["lokr_w2_a"].shape[0], parts["lokr_w2_a"].shape[0] * parts["lokr_w2_b"][0].numel()
    return w1[0] * w1[1] * w2_numel, w1[0] * w2_rows


def webui_layer(key: str, mapping: dict[str, tuple[int, ...]]) -> str | None:
    """networks.load_network's resolution of a module key on an SDXL model (webui-api.md 2.3)."""
    m = re.match(r"lora_te2_text_model_encoder_layers_(\d+)_(.+)", key)
    if m:  # convert_diffusers_name_to_compvis: bigG in HF naming -> OpenCLIP resblocks
        rest = m.group(2).replace("mlp_fc1", "mlp_c_fc").replace("mlp_fc2", "mlp_c_proj").replace("self_attn", "attn")
        key = f"1_model_transformer_resblocks_{m.group(1)}_{rest}"
    if key in mapping:
        return key
    qkv = re.match(r"(.*)_([qkv]_proj)$", key)
    if qkv and qkv.group(1) in mapping:
        return qkv.group(1)
    for old, new in (("lora_unet", "diffusion_model"), ("lora_te1_text_model", "0_transformer_text_model")):
        if key.startswith(old) and key.replace(old, new, 1) in mapping:
            return key.replace(old, new, 1)
    return None


@pytest.mark.parametrize("algo", list(ALGOS))
def test_sdxl_file_maps_in_the_webui_and_comfyui(sdxl_meta, algo):
    modules = group(file_tensors(sdxl_meta, algo))
    assert sum(k.startswith("lora_te1_") for k in modules) == 12 * 6    # CLIP-L: q/k/v/out + fc1/fc2 per layer
    assert sum(k.startswith("lora_te2_") for k in modules) == 32 * 6    # bigG
    convs = [k for k, p in modules.items() if next(iter(p.values())).dim() == 4 or "in_layers" in k]
    assert bool(convs) == (algo != "lora")

    mapping = {"diffusion_model_" + name.replace(".", "_"): shape for name, shape in sgm_unet_layers().items()}
    mapping.update(webui_te_modules())
    attention_parts: dict[str, set[str]] = {}
    for key, parts in modules.items():
        layer = webui_layer(key, mapping)
        assert layer is not None, f"the WebUI finds no layer for {key}"
        if layer.endswith("_attn"):
            attention_parts.setdefault(layer, set()).add(key.rsplit("_", 2)[-2])
        shape = mapping[layer]
        numel, rows = update_numel_and_rows(parts)
        assert numel == torch.Size(shape).numel() and rows == shape[0], (key, shape)
    assert len(attention_parts) == 32 and all(p == {"q", "k", "v"} for p in attention_parts.values())

    comfy = comfyui_key_map()
    assert not [k for k in modules if k not in comfy]
    assert not [f"{k}.{p}" for k, parts in modules.items() for p in parts if not COMFY_PARTS.match(p)]


@pytest.mark.parametrize("algo", ["lora", "locon"])
def test_sdxl_file_converts_in_diffusers(sdxl_meta, algo):
    from diffusers.loaders.lora_pipeline import StableDiffusionXLLoraLoaderMixin

    unet, te1, te2 = sdxl_meta
    tensors = file_tensors(sdxl_meta, algo)
    converted, _ = StableDiffusionXLLoraLoaderMixin.lora_state_dict(dict(tensors), unet_config=unet.config)
    names = ({f"unet.{n}" for n, _ in unet.named_modules()} | {f"text_encoder.{n}" for n, _ in te1.named_modules()}
             | {f"text_encoder_2.{n}" for n, _ in te2.named_modules()})
    downs = [k for k in converted if k.endswith("lora_A.weight") or ".down." in k]
    assert len(downs) == len(group(tensors))
    for key in downs:
        assert key.split(".")[0] + "." + diffusers_module_name(key) in names, key
