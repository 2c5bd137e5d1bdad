"""Every writer and every precision option uses one list of save precisions and one dtype per
name (lib_lora/precisions.py).

Oracles: the safetensors format (an 8-byte little-endian header length, then a JSON header
whose tensors carry dtype codes 'F16', 'BF16', 'F32'), read here by hand; the three names
written out as the README and the tab show them.
"""
from __future__ import annotations

import dataclasses
import json
import struct

import pytest
import torch

from lib_lora.config import OutputConfig
from lib_lora.errors import NetworkFileError
from lib_lora.networks import save_network_file
from lib_lora.ops.config import ExtractConfig, MergeConfig, ResizeConfig

NAMES = ("fp16", "bf16", "fp32")
SAFETENSORS_CODES = {"fp16": "F16", "bf16": "BF16", "fp32": "F32"}
KEY = "lora_unet_mid_block_attentions_0_proj_in"


def _header_dtypes(path) -> set[str]:
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + length])
    return {entry["dtype"] for name, entry in header.items() if name != "__metadata__"}


@pytest.mark.parametrize("precision", NAMES)
def test_a_lora_is_written_in_the_chosen_precision(tmp_path, precision):
    tensors = {f"{KEY}.lora_down.weight": torch.randn(2, 8), f"{KEY}.lora_up.weight": torch.randn(8, 2),
               f"{KEY}.alpha": torch.tensor(2.0)}
    path = save_network_file(tmp_path / "a.safetensors", tensors, {}, precision)
    assert _header_dtypes(path) == {SAFETENSORS_CODES[precision]}


def test_an_unknown_precision_is_refused_with_the_names_to_use(tmp_path):
    with pytest.raises(NetworkFileError) as err:
        save_network_file(tmp_path / "a.safetensors", {f"{KEY}.alpha": torch.tensor(1.0)}, {}, "fp8")
    assert "fp16, bf16, fp32" in str(err.value)


def _choices(cls: type, name: str) -> tuple:
    return next(f.metadata["choices"] for f in dataclasses.fields(cls) if f.name == name)


def test_every_precision_option_offers_the_same_names():
    assert _choices(OutputConfig, "save_precision") == NAMES
    for cls in (ExtractConfig, MergeConfig, ResizeConfig):
        assert _choices(cls, "precision") == NAMES
