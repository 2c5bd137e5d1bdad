"""Fixtures for single-file checkpoints: a real tiny ldm SD1 saved as one file, and its config folder.

The checkpoint is the state dict of a genuine ldm LatentDiffusion (tests/fixtures/tiny_ldm.py),
so its key names are the ones real SD1.x files carry; the config folder is a diffusers folder of
the same tiny architecture (the tiny UNet and CLIP of lib_lora/models/tiny.py, and a VAE with the
ldm fixture's 32-channel levels). Assembled config folders go to a temporary cache.
"""
from __future__ import annotations

import types

import pytest
import torch

from lib_lora.models import diffusers_adapter  # noqa: F401  (keeps diffusers from probing bitsandbytes)


@pytest.fixture(autouse=True)
def _config_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LIB_LORA_MODEL_CONFIG_CACHE", str(tmp_path_factory.getbasetemp() / "model_configs"))


@pytest.fixture(scope="session")
def tiny_single_file(tmp_path_factory):
    """namespace(ldm, safetensors, ckpt, config_dir) of the tiny ldm SD1 as single files."""
    from diffusers import AutoencoderKL
    from safetensors.torch import save_file

    from lib_lora.models.tiny import build_tiny_sd1, save_pipeline
    from tests.fixtures.tiny_ldm import build_sd1

    root = tmp_path_factory.mktemp("single_file")
    ldm = build_sd1(seed=3)
    state = {k: v.contiguous() for k, v in ldm.state_dict().items()}
    save_file(state, str(root / "tiny_sd1.safetensors"))
    torch.save({"state_dict": state, "global_step": 10}, str(root / "tiny_sd1.ckpt"))   # as ldm trainers save
    pipe = build_tiny_sd1(seed=0)
    ldm_vae = AutoencoderKL(block_out_channels=(32,) * 4, down_block_types=("DownEncoderBlock2D",) * 4,
                            up_block_types=("UpDecoderBlock2D",) * 4, layers_per_block=1, latent_channels=4,
                            norm_num_groups=32, sample_size=64)
    pipe.register_modules(vae=ldm_vae)
    save_pipeline(pipe, root / "tiny_config")
    return types.SimpleNamespace(ldm=ldm, safetensors=root / "tiny_sd1.safetensors", ckpt=root / "tiny_sd1.ckpt",
                                 config_dir=root / "tiny_config")
