"""LoHa/LoKr forward that rebuilds W + dW in backward (networks/recompute.py): same numbers, no weight kept.

The reference is independent of the module's code: W + dW from the file tensors by the WebUI's
formula (test_files.webui_updown), run through F.linear/F.conv2d under plain autograd.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from lib_lora.config import NetworkConfig
from lib_lora.networks import ALGORITHMS, create_network
from lib_lora.networks.base import NetworkModule
from lib_lora.networks.target import NetworkTarget
from test_files import webui_updown

LAYERS = {
    "linear": (lambda: nn.Linear(16, 24), (3, 5, 16)),
    "conv1x1": (lambda: nn.Conv2d(16, 24, 1), (2, 16, 6, 6)),
    "conv3x3": (lambda: nn.Conv2d(16, 24, 3, padding=1), (2, 16, 6, 6)),
    "conv3x3_stride2": (lambda: nn.Conv2d(16, 24, 3, stride=2, padding=1, bias=False), (2, 16, 7, 7)),
}
# (algo, rank): LoKr at rank 2 keeps w2 as a low-rank pair, at rank 16 as one full tensor
ALGOS = [("loha", 4), ("lokr", 2), ("lokr", 16)]


def make_module(algo: str, rank: int, layer_kind: str, dora: bool = False, dtype=torch.float64):
    torch.manual_seed(0)
    make_layer, x_shape = LAYERS[layer_kind]
    layer = make_layer().to(dtype).requires_grad_(False)
    module = ALGORITHMS[algo]("k", layer, rank=rank, alpha=3.0, dora=dora).to(dtype)
    with torch.no_grad():  # an untrained module's update is zero, which would hide any error
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    module.multiplier = 0.7
    module.attach()
    x = torch.randn(x_shape, dtype=dtype, generator=torch.Generator().manual_seed(2))
    return layer, module, x


def reference(layer, module, x, bypass: bool = False):
    """Output and the gradients of x and of every module parameter, by the WebUI formula."""
    leaves = {n: p.detach().clone().requires_grad_() for n, p in module.named_parameters()}
    parts = {**leaves, "alpha": module.alpha}
    weight = layer.weight
    if bypass:  # the update alone: op(x, dW), no multiplier, no bias
        new_weight, bias = webui_updown(parts, weight, 1.0).to(weight.dtype), None
    else:
        new_weight, bias = weight + webui_updown(parts, weight.float(), module.multiplier).to(weight.dtype), layer.bias
    x = x.clone().requires_grad_()
    out = F.conv2d(x, new_weight, bias, layer.stride, layer.padding) if isinstance(layer, nn.Conv2d) \
        else F.linear(x, new_weight, bias)
    grads = torch.autograd.grad(loss_of(out), [x, *leaves.values()])
    return out.detach(), dict(zip(["x", *leaves], grads))


def ours(layer, module, x, run=None):
    x = x.clone().requires_grad_()
    out = (run or layer)(x)
    params = dict(module.named_parameters())
    grads = torch.autograd.grad(loss_of(out), [x, *params.values()])
    return out.detach(), dict(zip(["x", *params], grads))


def ours_by_backward(module, x, run):
    """As `ours`, through .backward() (re-entrant checkpointing refuses autograd.grad)."""
    module.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_()
    out = run(x)
    loss_of(out).backward()
    return out.detach(), {"x": x.grad, **{n: p.grad for n, p in module.named_parameters()}}


def loss_of(out: torch.Tensor) -> torch.Tensor:
    weights = torch.linspace(-1, 1, out.numel(), dtype=torch.float32).reshape(out.shape)
    return (out.float() * weights).sum()


def assert_same(actual, expected, rtol, atol):
    torch.testing.assert_close(actual[0], expected[0], rtol=rtol, atol=atol)
    assert actual[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        torch.testing.assert_close(actual[1][name], grad, rtol=rtol, atol=atol, msg=name)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["fp64", "fp32"])
@pytest.mark.parametrize("dora", [False, True], ids=["plain", "dora"])
@pytest.mark.parametrize("layer_kind", LAYERS)
@pytest.mark.parametrize("algo,rank", ALGOS)
def test_output_and_grads_match_the_webui_formula(algo, rank, layer_kind, dora, dtype, monkeypatch):
    layer, module, x = make_module(algo, rank, layer_kind, dora, dtype)
    actual = ours(layer, module, x)
    # DoRA's row norm is taken in fp32 (full_delta(W.float())) whatever the weight's dtype
    tol = (1e-10, 1e-12) if dtype == torch.float64 and not dora else (1e-5, 1e-6)
    assert_same(actual, reference(layer, module, x), *tol)
    # and the previous forward (the plain op with W + dW under autograd) to rounding
    monkeypatch.setattr(type(module), "recompute_plan", lambda self: (None, ()))
    assert_same(actual, ours(layer, module, x), *((1e-12, 1e-13) if dtype == torch.float64 else (1e-6, 1e-7)))


@pytest.mark.parametrize("layer_kind", ["linear", "conv3x3"])
@pytest.mark.parametrize("algo,rank", ALGOS)
def test_the_separate_update_matches_too(algo, rank, layer_kind):
    """bypass (taken with dropout, or where the layer's own forward must run) rebuilds dW as well."""
    layer, module, x = make_module(algo, rank, layer_kind)
    assert_same(ours(layer, module, x, run=module.bypass), reference(layer, module, x, bypass=True), 1e-10, 1e-12)


@pytest.mark.parametrize("layer_kind", ["linear", "conv3x3"])
@pytest.mark.parametrize("algo,rank", ALGOS)
def test_autocast_bf16_runs_in_bf16_and_grads_are_close(algo, rank, layer_kind):
    layer, module, x = make_module(algo, rank, layer_kind, dtype=torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = ours(layer, module, x)
        expected = reference(layer, module, x)
    assert actual[0].dtype == expected[0].dtype == torch.bfloat16
    assert all(g.dtype == torch.float32 for g in actual[1].values())
    # both sides round to bf16 at the same places: only accumulation order may differ
    assert_same(actual, expected, 2e-2, 2e-2)


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non_reentrant"])
@pytest.mark.parametrize("algo,rank", ALGOS)
def test_gradient_checkpointing_gives_the_same_grads(algo, rank, reentrant):
    layer, module, x = make_module(algo, rank, "conv3x3")
    two_layers = lambda t: layer(layer(t[:, :16].contiguous())[:, :16].contiguous())  # noqa: E731
    plain = ours_by_backward(module, x, two_layers)
    checkpointed = ours_by_backward(module, x, lambda t: checkpoint(two_layers, t, use_reentrant=reentrant))
    assert_same(checkpointed, plain, 1e-10, 1e-12)


def test_a_trained_base_weight_keeps_its_gradient():
    """The op gives the base weight no gradient: a layer whose weight trains takes the plain path."""
    layer, module, x = make_module("loha", 4, "linear")
    layer.weight.requires_grad_(True)
    out = layer(x)
    out.sum().backward()
    assert layer.weight.grad is not None and module.hada_w1_a.grad is not None


def saved_bytes(run, x: torch.Tensor) -> int:
    """Bytes of every tensor autograd saves for backward during run(x) (each storage once)."""
    storages: dict[int, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        run(x)
    return sum(storages.values())


@pytest.mark.parametrize("autocast", [False, True], ids=["fp32", "bf16_autocast"])
@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_backward_keeps_nothing_weight_sized(algo, autocast):
    torch.manual_seed(0)
    layer = nn.Linear(1280, 1280).requires_grad_(False)
    module = ALGORITHMS[algo]("k", layer, rank=8, alpha=4.0)
    module.attach()
    weight_bytes = layer.weight.numel() * layer.weight.element_size()
    x = torch.randn(2, 64, 1280).requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        kept = saved_bytes(layer, x)
    assert kept < 0.25 * weight_bytes, (kept, weight_bytes)
    # the plain op with W + dW (what ran before) keeps a weight-sized tensor: the measure sees it
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        plain = saved_bytes(lambda t: F.linear(t, layer.weight + module.delta_weight(), layer.bias), x)
    assert plain > 0.45 * weight_bytes


@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_a_whole_unet_trains_as_before(sd1_unet, algo, monkeypatch):
    """Every wrapped layer of a UNet (attention, feed-forward, ResNet convs), with and without the
    rebuilding op: the same output and the same gradient for every factor."""
    net = create_network([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")],
                         NetworkConfig(algo=algo, dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0,
                                       targets="attn_ff_conv"))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    gen = torch.Generator().manual_seed(3)
    sample, context = torch.randn(1, 4, 8, 8, generator=gen), torch.randn(1, 5, 32, generator=gen)
    params = [p for p in net.parameters() if p.requires_grad]
    runs = []
    trained = {n for n, p in sd1_unet.named_parameters() if p.requires_grad}
    sd1_unet.requires_grad_(False)    # as in training: a trained base weight takes the plain op
    net.attach()
    try:
        assert all(m.recompute_plan()[0] is not None for m in net.lora_modules.values())
        for rebuild in (True, False):
            if not rebuild:
                monkeypatch.setattr(NetworkModule, "recompute_plan", lambda self: (None, ()))
            out = sd1_unet(sample, torch.tensor([10]), context).sample
            # autograd.grad, not backward: the shared UNet's own weights must not collect gradients
            runs.append((out.detach(), torch.autograd.grad(out.square().mean(), params)))
    finally:
        net.detach()
        for name, p in sd1_unet.named_parameters():   # the fixture is shared: leave it as found
            p.requires_grad_(name in trained)
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-5, atol=1e-6)
    largest = max(float(g.abs().max()) for g in runs[1][1])
    for actual, expected in zip(runs[0][1], runs[1][1]):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * largest)
