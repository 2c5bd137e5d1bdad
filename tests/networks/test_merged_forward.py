"""NetworkModule's one-op forward, op(x, W + dW): the same outputs and gradients as the separate
path (layer output + update), taken only where the layer's forward is torch's own, never under
dropout, and never for LoRA/LoCon, whose W + dW would be a second copy of the base weight kept
for backward (LoHa/LoKr build a full dW on either path, and rebuild it in backward: recompute.py).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib_lora.config import NetworkConfig
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import ALGORITHMS, create_network
from lib_lora.networks.lora import LoraModule

LAYERS = {
    "linear": (lambda: nn.Linear(16, 24), (3, 5, 16)),
    "conv1x1": (lambda: nn.Conv2d(16, 24, 1), (2, 16, 6, 6)),
    "conv3x3": (lambda: nn.Conv2d(16, 24, 3, padding=1, stride=2), (2, 16, 7, 7)),   # LoCon for lora
}
ALGOS = {"lora": ("lora", 4), "loha": ("loha", 4), "lokr_full_w2": ("lokr", 4), "lokr_low_rank_w2": ("lokr", 2)}


def perturb(module: nn.Module) -> None:
    """Give every factor a value: an untrained module's update is zero, which hides any error."""
    torch.manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)


def attached(algo: str, layer_kind: str, rank: int = 4, **options):
    """(layer, attached perturbed module, input) for one algorithm on one layer type."""
    torch.manual_seed(0)
    make_layer, x_shape = LAYERS[layer_kind]
    layer = make_layer()
    module = ALGORITHMS[algo]("lora_unet_test", layer, rank=rank, alpha=2.0, **options)
    perturb(module)
    module.attach()
    return layer, module, torch.randn(x_shape, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def bypass_calls(monkeypatch) -> list[str]:
    """Which algorithm classes ran their separate update (bypass): only the separate path does."""
    calls: list[str] = []
    for cls in set(ALGORITHMS.values()):
        real = cls.bypass
        monkeypatch.setattr(cls, "bypass", lambda self, x, _real=real: calls.append(self.algo) or _real(self, x))
    return calls


def force_path(monkeypatch, module, merged: bool) -> None:
    monkeypatch.setattr(type(module), "merged_weight_is_cheaper", lambda self: merged)


def out_and_grads(layer, module, x):
    """Layer output and the gradients of a fixed loss in the input and every module parameter."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = layer(x)
    weights = torch.linspace(-1, 1, out.numel()).reshape(out.shape)
    (out * weights).sum().backward()
    return out.detach(), x.grad, {n: p.grad.clone() for n, p in module.named_parameters()}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).abs().max() / expected.abs().max())


def expected_output(layer, module, x, multiplier: float = 1.0) -> torch.Tensor:
    with torch.no_grad():
        return module.original_forward(x) + module.layer_op(x, module.delta_weight() * multiplier, None)


@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("algo_case", ALGOS)
def test_merged_and_separate_paths_agree(algo_case, layer_kind, monkeypatch, bypass_calls):
    algo, rank = ALGOS[algo_case]
    layer, module, x = attached(algo, layer_kind, rank)
    force_path(monkeypatch, module, True)
    merged = out_and_grads(layer, module, x)
    assert bypass_calls == []
    force_path(monkeypatch, module, False)
    separate = out_and_grads(layer, module, x)
    assert bypass_calls == [algo]
    assert rel_err(merged[0], separate[0]) < 1e-5
    assert rel_err(merged[0], expected_output(layer, module, x)) < 1e-5
    assert rel_err(merged[1], separate[1]) < 1e-5
    assert merged[2].keys() == separate[2].keys() and merged[2]
    for name, grad in separate[2].items():
        assert float(grad.abs().max()) > 0, name
        assert rel_err(merged[2][name], grad) < 1e-5, name


@pytest.mark.parametrize("merged", [True, False], ids=["merged", "separate"])
@pytest.mark.parametrize("algo,layer_kind", [("lora", "linear"), ("loha", "conv3x3"), ("lokr", "conv1x1")])
def test_multiplier_scales_the_update_on_both_paths(algo, layer_kind, merged, monkeypatch, bypass_calls):
    layer, module, x = attached(algo, layer_kind)
    force_path(monkeypatch, module, merged)
    full = out_and_grads(layer, module, x)
    module.multiplier = 0.5
    half = out_and_grads(layer, module, x)
    assert bool(bypass_calls) != merged
    assert rel_err(half[0], expected_output(layer, module, x, 0.5)) < 1e-5
    assert rel_err(half[0], full[0]) > 1e-3              # the multiplier changed the output
    for name, grad in full[2].items():                  # the base layer has no LoRA gradient: all halves
        assert rel_err(half[2][name], grad * 0.5) < 1e-5, name


def test_dropout_in_training_takes_the_separate_path(monkeypatch, bypass_calls):
    layer, module, x = attached("loha", "linear", dropout=0.5)
    assert module.merged_weight_is_cheaper()             # without dropout this layer would merge
    module.train()
    outs = []
    for seed in (10, 11):
        torch.manual_seed(seed)
        with torch.no_grad():
            outs.append(layer(x))
        torch.manual_seed(seed)
        with torch.no_grad():
            expected = module.original_forward(x) + module.bypass(F.dropout(x, 0.5))
        assert rel_err(outs[-1], expected) < 1e-5
    assert bypass_calls == ["loha"] * 4                  # two forwards, two expectations
    assert not torch.allclose(outs[0], outs[1])          # dropout really acted on the update
    bypass_calls.clear()
    module.eval()                                        # no dropout at inference: one op again
    with torch.no_grad():
        assert rel_err(layer(x), expected_output(layer, module, x)) < 1e-5
    assert bypass_calls == []


def webui_like_linear_forward(self, x):
    """Stands in for the WebUI's class-wide nn.Linear.forward patch: it adds its own LoRAs to the
    layers it named (network_layer_name) and runs every other Linear (ours included) as is."""
    return F.linear(x, self.weight, self.bias) + (1.0 if hasattr(self, "network_layer_name") else 0.0)


def webui_like_conv_forward(self, x):
    return self._conv_forward(x, self.weight, self.bias) + (1.0 if hasattr(self, "network_layer_name") else 0.0)


@pytest.mark.parametrize("layer_kind,cls,patch", [("linear", nn.Linear, webui_like_linear_forward),
                                                  ("conv1x1", nn.Conv2d, webui_like_conv_forward)])
def test_a_class_wide_patch_is_honoured(layer_kind, cls, patch, monkeypatch, bypass_calls):
    layer, module, x = attached("lokr", layer_kind)
    layer.network_layer_name = "model_diffusion_model_test"
    assert module.layer_forward_is_torch() and module.merged_weight_is_cheaper()
    plain = expected_output(layer, module, x)
    with monkeypatch.context() as patched:
        patched.setattr(cls, "forward", patch)          # made after attaching, as the WebUI may
        assert not module.layer_forward_is_torch()
        with torch.no_grad():
            assert rel_err(layer(x), plain + 1.0) < 1e-5
        assert bypass_calls == ["lokr"]
    assert module.layer_forward_is_torch()              # undone: the one-op path is back
    with torch.no_grad():
        assert rel_err(layer(x), plain) < 1e-5
    assert bypass_calls == ["lokr"]


class DoublingLinear(nn.Linear):
    def forward(self, x):
        return super().forward(x) * 2.0


def test_an_own_forward_on_the_instance_or_a_subclass_is_honoured(bypass_calls):
    torch.manual_seed(0)
    x = torch.randn(3, 16)
    for layer in (DoublingLinear(16, 24), nn.Linear(16, 24)):
        if type(layer) is nn.Linear:   # another extension patched this instance before we attached
            layer.forward = lambda inp, _layer=layer: nn.Linear.forward(_layer, inp) * 2.0
        with torch.no_grad():
            base = layer(x)
        module = ALGORITHMS["lora"]("k", layer, rank=4, alpha=2.0)
        perturb(module)
        module.attach()
        assert not module.layer_forward_is_torch()
        with torch.no_grad():
            assert rel_err(layer(x), base + module.layer_op(x, module.delta_weight(), None)) < 1e-5
        module.detach()
    assert bypass_calls == ["lora", "lora"]


def saved_for_backward(layer: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Every tensor autograd keeps from one forward of `layer` until its backward."""
    saved: list[torch.Tensor] = []
    x = x.clone().requires_grad_()    # as inside a network, downstream of other trained layers

    def pack(tensor):
        saved.append(tensor)
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        layer(x)
    return saved


def copies_of_weight(saved: list[torch.Tensor], weight: torch.Tensor) -> int:
    """Saved tensors with the weight's size in storage of their own (views of W itself, such as
    the W^T a linear keeps, are no copy). No input, output or factor here has the weight's size."""
    own = weight.untyped_storage().data_ptr()
    return sum(t.numel() == weight.numel() and t.untyped_storage().data_ptr() != own for t in saved)


@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("rank", [4, 128])
def test_lora_keeps_no_weight_sized_tensor_for_backward(layer_kind, rank, bypass_calls):
    """A frozen base layer wrapped by LoRA/LoCon: backward needs the input, the base weight itself
    (by reference, not a copy) and rank-sized tensors; never W + dW, at any rank or layer size."""
    torch.manual_seed(0)
    make_layer, x_shape = LAYERS[layer_kind]
    layer = make_layer().requires_grad_(False)
    module = LoraModule("k", layer, rank=rank, alpha=1.0)
    perturb(module)
    module.attach()
    assert not module.merged_weight_is_cheaper()
    saved = saved_for_backward(layer, torch.randn(x_shape))
    assert bypass_calls == ["lora"]
    assert copies_of_weight(saved, layer.weight) == 0, "a copy of W is kept for backward"
    # LoHa builds the full dW in its one op with W + dW, and rebuilds it in backward (recompute.py)
    loha = ALGORITHMS["loha"]("k", make_layer().requires_grad_(False), rank=4, alpha=1.0)
    loha.attach()
    assert loha.merged_weight_is_cheaper()
    assert copies_of_weight(saved_for_backward(loha.layer, torch.randn(x_shape)), loha.layer.weight) == 0


def test_a_whole_unet_trains_the_same_on_either_path(sd1_unet, monkeypatch, bypass_calls):
    net = create_network([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")],
                         NetworkConfig(algo="locon", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0))
    perturb(net)
    gen = torch.Generator().manual_seed(3)
    sample, context = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 5, 32, generator=gen)
    runs, params = {}, list(net.named_parameters())
    net.attach()
    try:
        for merged in (True, False):
            monkeypatch.setattr(LoraModule, "merged_weight_is_cheaper", lambda self, _m=merged: _m)
            out = sd1_unet(sample, torch.tensor([10]), context).sample
            # autograd.grad, not backward: the shared UNet's own weights must not collect gradients
            grads = torch.autograd.grad(out.square().mean(), [p for _, p in params])
            runs[merged] = out.detach(), {n: g for (n, _), g in zip(params, grads)}
    finally:
        net.detach()
    assert len(bypass_calls) == len(net.lora_modules)   # only the separate run used the update's own ops
    assert rel_err(runs[True][0], runs[False][0]) < 1e-5
    # Some gradients are zero up to rounding (a time embedding added per channel just before a
    # one-channel-per-group GroupNorm): compare against the largest gradient, not each one's own.
    largest = max(float(g.abs().max()) for g in runs[False][1].values())
    assert sum(float(g.abs().max()) > 1e-3 * largest for g in runs[False][1].values()) > 20
    for name, grad in runs[False][1].items():
        torch.testing.assert_close(runs[True][1][name], grad, rtol=1e-4, atol=3e-5 * largest, msg=name)
