"""After a LoHa/LoKr backward through recompute.py, no new weight-sized storage is still alive.

The op rebuilds W + dW in backward and must drop it (and its gradient) when backward returns:
a reference cycle, a cache or a C++ holder keeping either would cost one weight-sized tensor per
adapted layer for the rest of the step. A real SDXL run's RSS looked like that; measured, it was
glibc's heap instead (tools/sdxl_one_step_check.py), and this pins the tensor side down.
Storages are compared by data pointer (every tensor gc can reach, views included), so a view of
the frozen base weight is not mistaken for a new tensor.
"""
from __future__ import annotations

import gc

import pytest
import torch
from torch import nn

from lib_lora.networks import ALGORITHMS

LAYERS = {
    "linear": (lambda: nn.Linear(640, 640), (1, 16, 640)),
    "conv3x3": (lambda: nn.Conv2d(320, 320, 3, padding=1), (1, 320, 8, 8)),
}


def live_storages() -> dict[int, int]:
    """data pointer -> bytes of every CPU storage a gc-visible tensor holds."""
    gc.collect()
    found: dict[int, int] = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.device.type == "cpu":
            storage = obj.untyped_storage()
            found[storage.data_ptr()] = storage.nbytes()
    return found


@pytest.mark.parametrize("layer_kind", sorted(LAYERS))
@pytest.mark.parametrize("algo", ["loha", "lokr"])
def test_no_weight_sized_tensor_outlives_backward(algo, layer_kind):
    torch.manual_seed(0)
    make_layer, x_shape = LAYERS[layer_kind]
    layer = make_layer().requires_grad_(False)
    module = ALGORITHMS[algo]("k", layer, rank=4, alpha=2.0)
    module.attach()
    assert module.recompute_plan()[0] is not None       # the rebuilding op is what runs
    weight_bytes = layer.weight.numel() * layer.weight.element_size()
    x = torch.randn(x_shape).requires_grad_()
    # The first call may leave one dW-shaped tensor that no Python object refers to (a one-off
    # per process, found by this test: the same storage every later call and every other
    # layer, so not a per-layer cost); later steps must then add nothing weight-sized.
    layer(x).sum().backward()
    for _ in range(2):
        before = live_storages()
        layer(x).sum().backward()
        new = {ptr: size for ptr, size in live_storages().items() if ptr not in before}
        big = [size for size in new.values() if size >= weight_bytes // 4]
        assert not big, (big, weight_bytes)


def test_live_weight_sized_tensors_do_not_grow_with_the_layers():
    torch.manual_seed(0)
    layers = [nn.Conv2d(320, 320, 3, padding=1).requires_grad_(False) for _ in range(4)]
    for i, layer in enumerate(layers):
        ALGORITHMS["loha"](f"k{i}", layer, rank=4, alpha=2.0).attach()
    x = torch.randn(1, 320, 8, 8).requires_grad_()
    weight_bytes = layers[0].weight.nbytes
    layers[0](x).sum().backward()
    before = live_storages()
    for layer in layers:
        layer(x).sum().backward()
    new = [size for ptr, size in live_storages().items() if ptr not in before and size >= weight_bytes // 4]
    assert not new, (new, weight_bytes)
