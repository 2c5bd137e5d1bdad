"""The metadata of a LoRA the tools write (extract, merge into one LoRA) comes from
networks/metadata.py, the one home of `ss_*`/`modelspec.*` keys.

Oracles written by hand from sd-scripts (networks/extract_lora_from_models.py and
library/sai_model_spec.py: architecture names, 'diffusers' / Stability's repository as the
implementation, 'epsilon' / 'v', the base-model version strings) and from pyproject.toml's
version, not from the code under test.
"""
from __future__ import annotations

import datetime as dt
import re
import time
from pathlib import Path

import pytest

from lib_lora.config import NetworkConfig
from lib_lora.networks.metadata import build_metadata, tool_metadata

WHEN = dt.datetime(2024, 5, 6, 7, 8, 9, 123456)
PROJECT_VERSION = re.search(r'^version = "([^"]+)"', (Path(__file__).resolve().parents[2] / "pyproject.toml")
                            .read_text(encoding="utf-8"), re.M).group(1)


def test_extracted_sdxl_lora_with_convs_has_sd_scripts_keys_and_values():
    before = int(time.time())
    meta = tool_metadata("sdxl", Path("/out/my lora.safetensors"), "8", "8", conv_dim=4,
                         comment="extracted from a - b by lib_lora", base_name="b.safetensors", when=WHEN)
    started = int(meta.pop("ss_training_started_at"))
    assert before <= started <= time.time() + 1
    assert meta == {
        "ss_output_name": "my lora",
        "ss_network_module": "networks.lora",
        "ss_network_dim": "8",
        "ss_network_alpha": "8",
        "ss_network_args": '{"conv_dim": "4", "conv_alpha": "4"}',
        "ss_v2": "False",
        "ss_base_model_version": "sdxl_base_v1-0",
        "ss_sd_model_name": "b.safetensors",
        "ss_training_comment": "extracted from a - b by lib_lora",
        "modelspec.sai_model_spec": "1.0.1",
        "modelspec.architecture": "stable-diffusion-xl-v1-base/lora",
        "modelspec.implementation": "https://github.com/Stability-AI/generative-models",
        "modelspec.title": "my lora",
        "modelspec.resolution": "1024x1024",
        "modelspec.date": "2024-05-06T07:08:09",
        "modelspec.prediction_type": "epsilon",
        "modelspec.implementation_version": f"train-lora/{PROJECT_VERSION}",
    }


@pytest.mark.parametrize("family, v, version, architecture, v2, prediction", [
    ("sd1", False, "sd_v1", "stable-diffusion-v1", "False", "epsilon"),
    ("sd2", False, "sd_v2", "stable-diffusion-v2-512", "True", "epsilon"),
    ("sd2", True, "sd_v2_v", "stable-diffusion-v2-768-v", "True", "v"),
])
def test_sd1_and_sd2_merged_loras(family, v, version, architecture, v2, prediction):
    meta = tool_metadata(family, "merged.safetensors", "Dynamic", "Dynamic", v_parameterization=v, when=WHEN)
    assert meta["ss_base_model_version"] == version and meta["ss_v2"] == v2
    assert meta["modelspec.architecture"] == architecture + "/lora"
    assert meta["modelspec.prediction_type"] == prediction
    assert meta["modelspec.implementation"] == "diffusers"
    assert meta["modelspec.resolution"] == "512x512"          # the value the tools have always written
    assert meta["ss_network_dim"] == meta["ss_network_alpha"] == "Dynamic"
    assert "ss_network_args" not in meta                     # sd-scripts writes none for a plain LoRA
    assert all(isinstance(value, str) for value in meta.values())


def test_trained_and_tool_files_share_one_modelspec_block():
    """The two entry points cannot drift apart: same family, title, size and date, same modelspec.*."""
    cfg = NetworkConfig()
    trained = build_metadata(cfg, "sdxl", title="my lora", resolution=1024, when=WHEN)
    made = tool_metadata("sdxl", "my lora.safetensors", "8", "8", when=WHEN)
    spec = {k: v for k, v in trained.items() if k.startswith("modelspec.")}
    assert spec == {k: v for k, v in made.items() if k.startswith("modelspec.")}
