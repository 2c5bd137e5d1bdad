"""diffusers reads only plain LoRA: `resize` turns our LoHa/LoKr files into one it loads, and says
how far each layer is from the original."""
from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from lib_lora.cli import main
from lib_lora.config import NetworkConfig
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import build_metadata, create_network, save_network_file
from test_files import webui_updown


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_resize_makes_a_plain_lora_diffusers_loads(tmp_path, sd1_unet, capsys, algo):
    from diffusers.loaders.lora_pipeline import StableDiffusionLoraLoaderMixin

    cfg = NetworkConfig(algo=algo, dim=4, alpha=2)
    net = create_network([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")], cfg)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.1)
    source = save_network_file(tmp_path / "in.safetensors", net.trainable_state(),
                               build_metadata(cfg, "sd1", title="in"), "fp32")
    out = tmp_path / "plain.safetensors"
    assert main(["resize", "--lora", str(source), "--out", str(out), "--dim", "1024", "--precision", "fp32"]) == 0
    assert "error" in capsys.readouterr().out.lower()
    plain = load_file(str(out))
    assert {k.split(".", 1)[1] for k in plain} == {"lora_up.weight", "lora_down.weight", "alpha"}
    converted, _ = StableDiffusionLoraLoaderMixin.lora_state_dict(dict(plain), unet_config=sd1_unet.config)
    assert len([k for k in converted if "lora_A" in k or ".down." in k]) == len(net.module_names())
    original = load_file(str(source))
    for name, module in net._leaf_modules().items():  # a rank above every layer's: exact
        parts = {k.split(".", 1)[1]: v for k, v in original.items() if k.startswith(name + ".")}
        new = {k.split(".", 1)[1]: v for k, v in plain.items() if k.startswith(name + ".")}
        shape = module.weight_shape
        ref = webui_updown(parts, torch.empty(shape), 1.0)
        assert torch.allclose(webui_updown(new, torch.empty(shape), 1.0), ref, atol=1e-4 * ref.abs().max() + 1e-6)
