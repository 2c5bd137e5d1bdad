"""The built-in Lora (v1.10.1) reads our per-output-row DoRA files as trained once dora_reader is in.

`GenuineNetworkModule` re-types the v1.10.1 `network.NetworkModule.apply_weight_decompose`
(extensions-builtin/Lora/network.py: per input column whatever the shape) and the part of
`finalize_updown` that follows it (the result scaled by calc_scale() * multiplier()). The oracle
is our own training forward: the weight a trained module applies (`W + full_delta(W)`).
"""
from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from lib_lora.networks import ALGORITHMS
from lib_lora.webui import dora_reader


class GenuineNetworkModule:
    def __init__(self, dora_scale: torch.Tensor, alpha: float = 1.0, dim: int = 1):
        self.dora_scale = dora_scale
        self.dora_norm_dims = dora_scale.dim() - 1
        self.alpha, self.dim = alpha, dim

    def calc_scale(self):
        return self.alpha / self.dim

    def apply_weight_decompose(self, updown, orig_weight):
        orig_weight = orig_weight.to(updown.dtype)
        dora_scale = self.dora_scale.to(device=orig_weight.device, dtype=updown.dtype)
        merged = updown.to(orig_weight.device) + orig_weight
        norm = (merged.transpose(0, 1).reshape(merged.shape[1], -1).norm(dim=1, keepdim=True)
                .reshape(merged.shape[1], *[1] * self.dora_norm_dims).transpose(0, 1))
        return merged * (dora_scale / norm) - orig_weight


@pytest.fixture
def network_module():
    """A fresh stand-in of the built-in Lora's `network` module per test (the patch is class-wide)."""
    cls = type("NetworkModule", (GenuineNetworkModule,), {})
    return types.SimpleNamespace(NetworkModule=cls)


def trained_dora(layer: nn.Module, rank: int = 4, seed: int = 0, train: bool = True, alpha: float = 4.0):
    torch.manual_seed(seed)
    module = ALGORITHMS["lora"]("lora_unet_x", layer, rank, alpha, dora=True)
    if train:
        with torch.no_grad():
            for p in module.parameters():
                p.add_(torch.randn_like(p) * 0.05)
    return module


def webui_weight(network_module, module, weight: torch.Tensor) -> torch.Tensor:
    """W + the built-in's change for our file's tensors: updown = up @ down unscaled, decomposed,
    then times calc_scale() (alpha/dim) and the multiplier 1, as finalize_updown does."""
    state = module.file_state()
    up, down = state["lora_up.weight"], state["lora_down.weight"]
    updown = (up.flatten(1) @ down.flatten(1)).reshape(weight.shape)
    reader = network_module.NetworkModule(state["dora_scale"], float(state["alpha"]), down.shape[0])
    return weight + reader.apply_weight_decompose(updown, weight) * reader.calc_scale() * 1.0


LAYERS = {"linear": lambda: nn.Linear(16, 24), "square": lambda: nn.Linear(24, 24),
          "pointwise": lambda: nn.Conv2d(16, 24, 1), "conv3x3": lambda: nn.Conv2d(16, 24, 3, padding=1)}


@pytest.mark.parametrize("alpha", [4.0, 1.0])
@pytest.mark.parametrize("kind", list(LAYERS))
def test_patched_reader_applies_what_training_trained(network_module, kind, alpha):
    layer = LAYERS[kind]()
    module = trained_dora(layer, alpha=alpha)
    weight = layer.weight.detach()
    trained = weight + module.full_delta(weight)
    genuine = webui_weight(network_module, module, weight)
    assert not torch.allclose(genuine, trained, atol=1e-3), "the unpatched reader should misread per-row files"
    assert dora_reader.install(network_module)
    assert torch.allclose(webui_weight(network_module, module, weight), trained, atol=1e-5)


def test_untrained_dora_changes_nothing_once_patched(network_module):
    layer = nn.Linear(16, 24)
    module = trained_dora(layer, train=False)
    weight = layer.weight.detach()
    dora_reader.install(network_module)
    assert torch.allclose(webui_weight(network_module, module, weight), weight, atol=1e-6)


def test_per_column_files_keep_the_webui_math(network_module):
    torch.manual_seed(1)
    weight, updown = torch.randn(24, 16), torch.randn(24, 16) * 0.01
    column_scale = (weight + updown).norm(dim=0, keepdim=True) * 1.1      # (1, in): the old layout
    before = network_module.NetworkModule(column_scale).apply_weight_decompose(updown, weight)
    dora_reader.install(network_module)
    after = network_module.NetworkModule(column_scale).apply_weight_decompose(updown, weight)
    assert torch.equal(before, after)


def test_install_once_and_only_where_the_builtin_is(network_module):
    assert dora_reader.install(network_module) and dora_reader.install(network_module)
    patched = network_module.NetworkModule.apply_weight_decompose
    assert patched.__wrapped__ is GenuineNetworkModule.apply_weight_decompose
    assert not dora_reader.install(types.SimpleNamespace())           # built-in Lora disabled
    assert not dora_reader.is_per_output_row(torch.ones(1, 16), torch.ones(24, 16))
    assert dora_reader.is_per_output_row(torch.ones(24, 1, 1, 1), torch.ones(24, 16, 3, 3))
