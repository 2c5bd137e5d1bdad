"""A LoRA written with PEFT's weight names (lora_A / lora_B) means the same as sd-scripts' names
(lora_down / lora_up), both where the networks package reads a file and where the tools group a
file's tensors into modules (one PEFT -> kohya table, in networks/network_file.py).

Oracle: PEFT's convention written by hand (lora_A: (r, in) applied first, lora_B: (out, r)), and
the WebUI's scale alpha / r; dW = alpha / r * B @ A.
"""
from __future__ import annotations

import torch
from safetensors.torch import save_file

from lib_lora.networks import load_network_file
from lib_lora.ops.lora_delta import group_modules

KEY = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"


def _factors():
    generator = torch.Generator().manual_seed(0)
    down = torch.randn(4, 32, generator=generator)      # (r, in)
    up = torch.randn(16, 4, generator=generator)        # (out, r)
    return down, up, torch.tensor(2.0)


def test_tools_read_peft_names_as_down_and_up():
    down, up, alpha = _factors()
    peft = {f"{KEY}.lora_A.weight": down, f"{KEY}.lora_B.weight": up, f"{KEY}.alpha": alpha}
    module = group_modules(peft)[KEY]
    assert set(module.parts) == {"lora_down.weight", "lora_up.weight", "alpha"}
    torch.testing.assert_close(module.delta(), (2.0 / 4) * up @ down)


def test_network_files_with_peft_names_load_as_down_and_up(tmp_path):
    down, up, alpha = _factors()
    path = tmp_path / "peft.safetensors"
    save_file({f"{KEY}.lora_A.weight": down, f"{KEY}.lora_B.weight": up, f"{KEY}.alpha": alpha}, str(path))
    tensors, _ = load_network_file(path)
    assert set(tensors) == {f"{KEY}.lora_down.weight", f"{KEY}.lora_up.weight", f"{KEY}.alpha"}
    torch.testing.assert_close(tensors[f"{KEY}.lora_down.weight"], down)
    torch.testing.assert_close(tensors[f"{KEY}.lora_up.weight"], up)
