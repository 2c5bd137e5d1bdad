"""DoRA-LoRA layers and fused MHA projections rebuild W + dW in backward (networks/recompute.py).

References are independent of the modules' code: the merged weight by the WebUI's formula
(test_files.webui_updown) through F.linear/F.conv2d, or for an MHA through torch's own
F.multi_head_attention_forward, under plain autograd, in fp64.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lib_lora.networks import ALGORITHMS
from lib_lora.networks.mha import MultiheadAttentionAdapter
from test_files import webui_updown
from test_recomputed_weight import assert_same, loss_of, make_module, ours, reference, saved_bytes


@pytest.mark.parametrize("layer_kind", ["linear", "conv1x1", "conv3x3", "conv3x3_stride2"])
def test_dora_lora_matches_the_webui_formula_and_rebuilds_the_weight(layer_kind, monkeypatch):
    layer, module, x = make_module("lora", 4, layer_kind, dora=True)
    assert module.recompute_plan()[0] is not None
    out = layer(x.clone().requires_grad_())
    assert type(out.grad_fn).__name__ == "RecomputedWeightOpBackward"
    actual = ours(layer, module, x)
    # DoRA's row norm is taken in fp32 (full_delta(W.float())) whatever the weight's dtype
    assert_same(actual, reference(layer, module, x), 1e-5, 1e-6)
    # and the previous forward (the plain op with W' under autograd) to rounding
    monkeypatch.setattr(type(module), "recompute_plan", lambda self: (None, ()))
    assert_same(actual, ours(layer, module, x), 1e-12, 1e-13)


@pytest.mark.parametrize("layer_kind", ["linear", "conv3x3"])
def test_plain_lora_keeps_its_separate_update(layer_kind):
    """Without DoRA, LoRA never builds W + dW: op(x, W) + up(down(x)) * scale, as before."""
    layer, module, x = make_module("lora", 4, layer_kind)
    out = layer(x.clone().requires_grad_())
    assert type(out.grad_fn).__name__ != "RecomputedWeightOpBackward"
    names = set()
    node = out.grad_fn
    while node is not None and len(names) < 50:   # the first steps of the graph: an add, no rebuild
        names.add(type(node).__name__)
        node = node.next_functions[0][0] if node.next_functions else None
    assert "RecomputedWeightOpBackward" not in names
    assert_same(ours(layer, module, x), reference(layer, module, x), 1e-10, 1e-12)


def test_dora_lora_keeps_nothing_weight_sized():
    torch.manual_seed(0)
    layer = nn.Linear(1280, 1280).requires_grad_(False)
    module = ALGORITHMS["lora"]("k", layer, rank=8, alpha=4.0, dora=True)
    module.attach()
    weight_bytes = layer.weight.numel() * layer.weight.element_size()
    x = torch.randn(2, 64, 1280).requires_grad_()
    assert saved_bytes(layer, x) < 0.25 * weight_bytes
    # the plain op with W' (what ran before) keeps a weight-sized tensor: the measure sees it
    plain = saved_bytes(lambda t: F.linear(t, layer.weight + module.full_delta(layer.weight), layer.bias), x)
    assert plain > 0.45 * weight_bytes


# ---- MultiheadAttention ----------------------------------------------------------------------

MHA_ALGOS = [("loha", 4, False), ("lokr", 2, False), ("lora", 4, True), ("lora", 4, False), ("loha", 4, True)]


def make_mha(algo: str, rank: int, dora: bool, embed: int = 16, heads: int = 4, batch_first: bool = True,
             dtype=torch.float64):
    torch.manual_seed(0)
    mha = nn.MultiheadAttention(embed, heads, batch_first=batch_first).to(dtype).requires_grad_(False)
    adapter = MultiheadAttentionAdapter("k", mha, ALGORITHMS[algo], rank, 3.0, dora=dora).to(dtype)
    with torch.no_grad():   # an untrained update is zero, which would hide any error
        for p in adapter.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    adapter.multiplier = 0.7
    adapter.attach()
    return mha, adapter


def mha_reference(mha, adapter, query, key, value, **kwargs):
    """F.multi_head_attention_forward on the merged weights, by the WebUI formula."""
    leaves = {n: p.detach().clone().requires_grad_() for n, p in adapter.named_parameters()}
    merged = {}
    for name, leaf in adapter.leaves.items():
        parts = {n.split(".", 2)[2]: t for n, t in leaves.items() if n.startswith(f"leaves.{name}.")}
        parts["alpha"] = leaf.alpha
        weight = leaf.layer.weight
        merged[name] = weight + webui_updown(parts, weight, adapter.multiplier)
    inputs = [t.clone().requires_grad_() for t in (query, key, value)]
    q, k, v = (t.transpose(0, 1) for t in inputs) if mha.batch_first else inputs
    out, weights = F.multi_head_attention_forward(
        q, k, v, mha.embed_dim, mha.num_heads, torch.cat([merged[p] for p in "qkv"]), mha.in_proj_bias,
        None, None, False, mha.dropout, merged["out"], mha.out_proj.bias, training=mha.training, **kwargs)
    out = out.transpose(0, 1) if mha.batch_first else out
    return mha_grads(out, weights, inputs, list(leaves), list(leaves.values()))


def mha_ours(mha, adapter, query, key, value, **kwargs):
    inputs = [t.clone().requires_grad_() for t in (query, key, value)]
    out, weights = mha(*inputs, **kwargs)
    params = dict(adapter.named_parameters())
    return mha_grads(out, weights, inputs, list(params), list(params.values()))


def mha_grads(out, weights, inputs, names, params):
    loss = loss_of(out) + (loss_of(weights) if weights is not None else 0)
    grads = torch.autograd.grad(loss, [*inputs, *params], allow_unused=True)
    return (out.detach(), weights), dict(zip(["query", "key", "value", *names], grads))


def causal_mask(n: int, boolean: bool) -> torch.Tensor:
    upper = torch.ones(n, n, dtype=torch.bool).triu(1)
    return upper if boolean else torch.zeros(n, n, dtype=torch.float64).masked_fill(upper, float("-inf"))


CALLS = {
    "openclip": dict(need_weights=False, mask="float"),
    "weights_bool_mask": dict(need_weights=True, mask="bool"),
    "weights_per_head": dict(need_weights=True, mask=None, average_attn_weights=False),
    "causal_hint": dict(need_weights=False, mask="bool", is_causal=True),
}


@pytest.mark.parametrize("batch_first", [True, False], ids=["batch_first", "seq_first"])
@pytest.mark.parametrize("call", CALLS)
@pytest.mark.parametrize("algo,rank,dora", MHA_ALGOS)
def test_mha_matches_torch_attention_on_the_merged_weights(algo, rank, dora, call, batch_first, monkeypatch):
    mha, adapter = make_mha(algo, rank, dora, batch_first=batch_first)
    kwargs = dict(CALLS[call])
    mask = kwargs.pop("mask")
    if mask is not None:
        kwargs["attn_mask"] = causal_mask(5, mask == "bool")
    x = torch.randn((3, 5, 16) if batch_first else (5, 3, 16), dtype=torch.float64)
    assert adapter._can_rebuild_weights(x, None, kwargs.get("attn_mask"))
    actual = mha_ours(mha, adapter, x, x, x, **kwargs)
    # the update is added in fp32 (full_delta(W.float())) whatever the weight's dtype
    assert_mha_same(actual, mha_reference(mha, adapter, x, x, x, **kwargs), 1e-5, 1e-6)
    # and the previous forward (torch's attention on W + dW under plain autograd) to rounding
    monkeypatch.setattr(type(adapter.leaves["q"]), "recompute_plan", lambda self: (None, ()))
    assert not adapter._can_rebuild_weights(x, None, kwargs.get("attn_mask"))
    assert_mha_same(actual, mha_ours(mha, adapter, x, x, x, **kwargs), 1e-11, 1e-12)


def assert_mha_same(actual, expected, rtol, atol):
    torch.testing.assert_close(actual[0][0], expected[0][0], rtol=rtol, atol=atol)
    if expected[0][1] is not None:
        torch.testing.assert_close(actual[0][1], expected[0][1], rtol=rtol, atol=atol)
    assert actual[1].keys() == expected[1].keys()
    for name, grad in expected[1].items():
        torch.testing.assert_close(actual[1][name], grad, rtol=rtol, atol=atol, msg=name)


def test_mha_cross_attention_and_plain_path_cases_match():
    """Distinct query/key/value, and a key padding mask (which takes the plain path)."""
    mha, adapter = make_mha("loha", 4, False)
    gen = torch.Generator().manual_seed(1)
    q, k, v = (torch.randn(2, n, 16, dtype=torch.float64, generator=gen) for n in (4, 6, 6))
    for kwargs in (dict(need_weights=False), dict(key_padding_mask=torch.tensor([[False] * 5 + [True]] * 2))):
        assert_mha_same(mha_ours(mha, adapter, q, k, v, **kwargs), mha_reference(mha, adapter, q, k, v, **kwargs),
                        1e-5, 1e-6)


def test_mha_keeps_nothing_weight_sized():
    """OpenCLIP's call on an MHA of embed 1280 (SDXL's second encoder) with LoHa: what backward keeps
    is the activations, far below even one projection's weight (four of them are rebuilt)."""
    mha, adapter = make_mha("loha", 8, False, embed=1280, heads=20, dtype=torch.float32)
    one_weight = 1280 * 1280 * 4
    x = torch.randn(2, 8, 1280).requires_grad_()
    mask = causal_mask(8, False).float()
    kept = saved_bytes(lambda t: mha(t, t, t, need_weights=False, attn_mask=mask)[0], x)
    assert kept < 0.25 * one_weight, (kept, one_weight)
    # the plain path (W + dW under autograd; taken with a key padding mask) keeps weight-sized
    # tensors: the measure sees them
    padding = torch.zeros(2, 8)
    plain = saved_bytes(lambda t: mha(t, t, t, need_weights=False, attn_mask=mask, key_padding_mask=padding)[0], x)
    assert plain > 2 * one_weight, (plain, one_weight)


@pytest.mark.parametrize("need_weights", [False, True])
def test_mha_under_bf16_autocast_matches_the_plain_path(need_weights, monkeypatch):
    mha, adapter = make_mha("lokr", 2, True, dtype=torch.float32)
    x = torch.randn(3, 5, 16)
    kwargs = dict(need_weights=need_weights, attn_mask=causal_mask(5, True))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        actual = mha_ours(mha, adapter, x, x, x, **kwargs)
        monkeypatch.setattr(type(adapter.leaves["q"]), "recompute_plan", lambda self: (None, ()))
        expected = mha_ours(mha, adapter, x, x, x, **kwargs)
    assert actual[0][0].dtype == expected[0][0].dtype
    assert all(g.dtype == torch.float32 for g in actual[1].values())
    # both sides round to bf16 at the same places: only accumulation order may differ
    assert_mha_same(actual, expected, 2e-2, 2e-2)


@pytest.mark.parametrize("reentrant", [True, False], ids=["reentrant", "non_reentrant"])
def test_gradient_checkpointing_gives_the_same_grads(reentrant):
    from torch.utils.checkpoint import checkpoint
    from test_recomputed_weight import ours_by_backward

    layer, module, x = make_module("lora", 4, "conv3x3", dora=True)
    two_layers = lambda t: layer(layer(t[:, :16].contiguous())[:, :16].contiguous())  # noqa: E731
    plain = ours_by_backward(module, x, two_layers)
    assert_same(ours_by_backward(module, x, lambda t: checkpoint(two_layers, t, use_reentrant=reentrant)),
                plain, 1e-10, 1e-12)
    mha, adapter = make_mha("loha", 4, False)
    attend = lambda t: mha(t, t, t, need_weights=False)[0]  # noqa: E731
    plain = ours_by_backward(adapter, x.reshape(3, -1, 16)[:, :5], attend)
    assert_same(ours_by_backward(adapter, x.reshape(3, -1, 16)[:, :5],
                                 lambda t: checkpoint(attend, t, use_reentrant=reentrant)), plain, 1e-10, 1e-12)
