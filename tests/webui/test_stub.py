"""The stand-in behaves like the WebUI where Train LoRA depends on it."""
from __future__ import annotations

import torch

from tests.webui.conftest import load_family


def test_sd_model_is_lazy_tiny_ldm_with_webui_wrappers(webui):
    model = load_family(webui, "sd1")
    assert model.is_sd1 and not model.is_sdxl
    assert type(model).__name__ == "LatentDiffusion"
    assert hasattr(model.cond_stage_model, "wrapped")          # hijacked like the WebUI does
    assert webui.sd_hijack.current_optimizer == "sdp"


def test_generation_is_seeded_and_lora_merge_is_restored(fresh_state, tmp_path):
    webui = fresh_state
    model = load_family(webui, "sd1")

    def generate(prompt):
        p = webui.processing.StableDiffusionProcessingTxt2Img(prompt=prompt, steps=2, width=16, height=16,
                                                              seed=7, cfg_scale=5)
        return webui.processing.process_images(p).images[0]

    first, second = generate("a cat"), generate("a cat")
    assert first.size == (16, 16) and first.tobytes() == second.tobytes()
    weight = model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_q.weight
    before = weight.detach().clone()
    _write_lora(webui, "demo", weight.shape)
    generate("a cat <lora:demo:1>")
    assert webui.networks.loaded_networks and not torch.equal(weight, before)   # merged in place
    assert not webui.networks.unmatched_keys
    assert generate("a cat").tobytes() == first.tobytes()                       # no LoRA: restored
    assert torch.equal(weight, before)


def _write_lora(webui, name, shape):
    import os

    from safetensors.torch import save_file
    key = "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q"
    tensors = {f"{key}.lora_down.weight": torch.randn(4, shape[1]), f"{key}.lora_up.weight": torch.randn(shape[0], 4),
               f"{key}.alpha": torch.tensor(4.0)}
    save_file(tensors, os.path.join(webui.shared.cmd_opts.lora_dir, f"{name}.safetensors"))
