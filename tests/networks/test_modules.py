"""Each algorithm x layer type x dtype: forward = base + op(x, dW); detach and merge are exact."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib_lora.networks import ALGORITHMS

from test_files import webui_updown

LAYERS = {
    "linear": lambda: nn.Linear(16, 24),
    "conv1x1": lambda: nn.Conv2d(16, 24, 1),
    "conv3x3": lambda: nn.Conv2d(16, 24, 3, padding=1, stride=2),
}
DTYPES = {"fp32": (torch.float32, 1e-5), "bf16": (torch.bfloat16, 3e-2)}


def make(layer_kind: str, dtype: torch.dtype):
    torch.manual_seed(0)
    layer = LAYERS[layer_kind]().to(dtype)
    x = torch.randn(2, 16, dtype=dtype) if layer_kind == "linear" else torch.randn(2, 16, 6, 6, dtype=dtype)
    return layer, x


def perturb(module: nn.Module) -> None:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)


@pytest.mark.parametrize("dtype_name", DTYPES)
@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("dora", [False, True], ids=["plain", "dora"])
@pytest.mark.parametrize("algo", ["lora", "loha", "lokr"])
def test_forward_is_base_plus_delta(algo, dora, layer_kind, dtype_name):
    dtype, tol = DTYPES[dtype_name]
    layer, x = make(layer_kind, dtype)
    base_out = layer(x)
    module = ALGORITHMS[algo]("lora_unet_test", layer, rank=4, alpha=2.0, dora=dora).to(dtype)
    module.attach()
    # An untrained module changes nothing (DoRA rebuilds the weight: equal up to rounding).
    assert torch.allclose(layer(x), base_out, atol=tol, rtol=tol) if dora else torch.equal(layer(x), base_out)
    perturb(module)
    module.multiplier = 0.7
    weight = layer.weight.float()
    delta = module.full_delta(weight)
    assert delta.abs().max() > 0
    # the oracle: the WebUI's math on the tensors the file would hold (test_files.webui_updown), through
    # torch's own layer function, not the module's full_delta/layer_op
    webui_delta = webui_updown({k: v.float() for k, v in module.file_state().items()}, weight, 0.7)
    bias = None if layer.bias is None else layer.bias.float()
    expected = (F.linear(x.float(), weight + webui_delta, bias) if isinstance(layer, nn.Linear)
                else F.conv2d(x.float(), weight + webui_delta, bias, stride=layer.stride, padding=layer.padding))
    assert torch.allclose(layer(x).float(), expected, atol=tol, rtol=tol)
    if not dora:  # without DoRA the update is additive: multiplier scales the bare delta
        assert torch.allclose(delta, module.delta_weight().float().reshape(weight.shape) * 0.7, atol=1e-6)


@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("algo", ["lora", "loha", "lokr"])
def test_detach_restores_forward_and_outputs(algo, layer_kind):
    layer, x = make(layer_kind, torch.float32)
    class_forward = type(layer).forward
    before = layer(x)
    module = ALGORITHMS[algo]("lora_unet_test", layer, rank=4, alpha=4.0)
    perturb(module)
    module.attach()
    assert not torch.equal(layer(x), before)
    module.detach()
    assert "forward" not in layer.__dict__ and layer.forward.__func__ is class_forward
    assert torch.equal(layer(x), before)


def test_detach_keeps_a_forward_that_was_patched_on_the_instance():
    layer, x = make("linear", torch.float32)
    patched = lambda inp: nn.Linear.forward(layer, inp) * 2  # noqa: E731 (what another extension might do)
    layer.forward = patched
    module = ALGORITHMS["lora"]("k", layer, rank=2, alpha=2.0)
    perturb(module)
    module.attach()
    module.detach()
    assert layer.forward is patched


def test_class_patch_made_after_attach_is_honoured(monkeypatch):
    layer, x = make("linear", torch.float32)
    module = ALGORITHMS["lora"]("k", layer, rank=2, alpha=2.0)
    module.attach()
    plain = layer(x)
    monkeypatch.setattr(nn.Linear, "forward", lambda self, inp: torch.zeros(1))  # like the WebUI's class patch
    assert torch.equal(layer(x), torch.zeros(1))
    monkeypatch.undo()
    assert torch.equal(layer(x), plain)


@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("dora", [False, True], ids=["plain", "dora"])
@pytest.mark.parametrize("algo", ["lora", "loha", "lokr"])
def test_merge_then_unmerge_is_inverse(algo, dora, layer_kind):
    layer, x = make(layer_kind, torch.float32)
    original = layer.weight.detach().clone()
    module = ALGORITHMS[algo]("k", layer, rank=4, alpha=2.0, dora=dora)
    perturb(module)
    module.attach()
    attached_out = layer(x)
    module.merge()
    assert not torch.equal(layer.weight, original)
    assert torch.allclose(layer(x), attached_out, atol=1e-5), "merged forward must equal the attached one"
    module.unmerge()
    assert torch.allclose(layer.weight, original, atol=1e-6)


def test_lokr_full_matrix_ignores_alpha_like_the_webui():
    layer = nn.Linear(8, 8)
    module = ALGORITHMS["lokr"]("k", layer, rank=8, alpha=1.0)
    assert module.lokr_w2 is not None and module.scale() == 1.0 and float(module.alpha) == 8.0
