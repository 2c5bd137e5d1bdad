"""The walking skeleton as a newcomer meets it: `python -m lib_lora demo --out DIR`.

Its LoRA files must load in diffusers (another tool) into the base model the demo
saved, with every key used, and change the image; the LoRA must have learned.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors import safe_open

from lib_lora.cli import main
from tests.fixtures.library_logs import library_warnings


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("демо out")
    assert main(["demo", "--out", str(out)]) == 0
    return out


def test_demo_writes_per_epoch_files_config_model_and_grid(demo_dir):
    lora = demo_dir / "lora"
    epochs = sorted(p.name for p in lora.glob("demo_lora-*.safetensors"))
    assert epochs == ["demo_lora-000001.safetensors", "demo_lora-000002.safetensors", "demo_lora-000003.safetensors"]
    assert (lora / "demo_lora.toml").is_file()
    assert (demo_dir / "base_model" / "model_index.json").is_file()
    assert (demo_dir / "grid" / "demo_lora-grid.png").stat().st_size > 1000
    with safe_open(str(lora / epochs[-1]), "pt") as f:
        meta = f.metadata()
    assert meta["ss_epoch"] == "3" and meta["ss_network_module"] == "networks.lora"
    assert meta["ss_base_model_version"] == "sd_v1" and meta["sshs_model_hash"]
    assert json.loads(meta["ss_tag_frequency"])["5_lrsq"]["lrsq"] == 8


def _lora_layers(module) -> int:
    return sum(1 for m in module.modules() if hasattr(m, "lora_A") and len(getattr(m, "lora_A")) > 0)


def test_demo_lora_loads_in_diffusers_with_every_key_and_changes_the_image(demo_dir):
    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    pipe = StableDiffusionPipeline.from_pretrained(str(demo_dir / "base_model"), local_files_only=True,
                                                   safety_checker=None)
    pipe.set_progress_bar_config(disable=True)

    def generate():
        return pipe("lrsq, white circle", num_inference_steps=4, width=64, height=64, output_type="np",
                    generator=torch.Generator().manual_seed(3)).images[0]

    before = generate()
    state = load_file(str(demo_dir / "lora" / "demo_lora-000003.safetensors"))
    modules_in_file = {k.split(".")[0] for k in state}
    with library_warnings() as messages:
        pipe.load_lora_weights(dict(state))
    assert not [m for m in messages if "unexpected" in m.lower() or "missing" in m.lower()]
    unet_modules = {k for k in modules_in_file if k.startswith("lora_unet_")}
    te_modules = modules_in_file - unet_modules
    assert _lora_layers(pipe.unet) == len(unet_modules)
    assert _lora_layers(pipe.text_encoder) == len(te_modules)
    after = generate()
    assert abs(after - before).mean() > 1e-3


def test_demo_lora_learned_the_trigger(demo_dir):
    # measured again on the written files, as the demo measures it
    from lib_lora.demo import demo_config, learned_distance
    from lib_lora.models.diffusers_adapter import load_diffusers_model

    cfg = demo_config(demo_dir, demo_dir / "base_model")
    model = load_diffusers_model(demo_dir / "base_model")
    without = learned_distance(model, None, cfg.sample.prompts[0], cfg)
    with_lora = learned_distance(model, demo_dir / "lora" / "demo_lora-000003.safetensors", cfg.sample.prompts[0], cfg)
    assert with_lora < 0.8 * without
