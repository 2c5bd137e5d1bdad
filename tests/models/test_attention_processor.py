"""The UNet attention processor behind `training.cpu_attention_kernel`: the compiled kernel where it
can run, SDPA where it cannot, the same numbers as diffusers' AttnProcessor2_0 either way, and a
note for the user when the kernel cannot be built.
"""
from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from lib_lora.config import NetworkConfig, TrainConfig
from lib_lora.kernels import cpu_attention
from lib_lora.models.attention import SmallHeadAttnProcessor
from lib_lora.networks import create_network

REASON = "no C compiler found (set CC, or install gcc or clang)"


@pytest.fixture(scope="module")
def tiny():
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1

    return DiffusersModel(build_tiny_sd1(seed=0), name="tiny")


@pytest.fixture
def kernel_calls(monkeypatch) -> list[int]:
    """Counts the calls that reach the compiled kernel (one entry per attention call)."""
    calls: list[int] = []
    real = cpu_attention.attention

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(cpu_attention, "attention", counted)
    return calls


def processor_types(model) -> set[type]:
    return {type(p) for p in model.unet.attn_processors.values()}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().abs().max() / expected.detach().abs().max())


# ---- choosing the processor ---------------------------------------------------------------------

def test_set_attention_picks_the_processor_the_options_ask_for(tiny, kernel, monkeypatch):
    assert tiny.set_attention(True, True) == ""
    assert processor_types(tiny) == {SmallHeadAttnProcessor}
    assert tiny.set_attention(True, False) == ""
    assert processor_types(tiny) == {AttnProcessor2_0}
    assert tiny.set_attention(False, True) == ""
    assert processor_types(tiny) == {AttnProcessor}
    monkeypatch.setattr(tiny, "dtype", torch.bfloat16)   # the kernel is fp32 only: no note, plain SDPA
    assert tiny.set_attention(True, True) == ""
    assert processor_types(tiny) == {AttnProcessor2_0}


def test_without_the_kernel_sdpa_is_used_and_the_user_is_told_why(tiny, monkeypatch):
    monkeypatch.setattr(cpu_attention, "available", lambda: (False, REASON))
    note = tiny.set_attention(True, True)
    assert REASON in note and "SDPA" in note
    assert processor_types(tiny) == {AttnProcessor2_0}


def test_the_trainer_passes_the_note_to_the_status_hooks(tiny, monkeypatch):
    from lib_lora.training import TrainHooks
    from lib_lora.training.hooks import HookCaller
    from lib_lora.training.trainer import _prepare_model

    statuses: list[str] = []
    hooks = type("H", (TrainHooks,), {"on_status": lambda self, text: statuses.append(text)})()
    monkeypatch.setattr(cpu_attention, "available", lambda: (False, REASON))
    cfg = TrainConfig()
    cfg.training.mixed_precision = "no"
    _prepare_model(cfg, tiny, HookCaller([hooks]))
    assert any(REASON in s for s in statuses), statuses
    statuses.clear()
    cfg.training.cpu_attention_kernel = False     # switched off: nothing to tell
    _prepare_model(cfg, tiny, HookCaller([hooks]))
    assert statuses == [] and processor_types(tiny) == {AttnProcessor2_0}


# ---- the processor on single attention layers ---------------------------------------------------

def run_layer(attn: Attention, processor, hidden, context=None, mask=None) -> torch.Tensor:
    attn.set_processor(processor)
    return attn(hidden, encoder_hidden_states=context, attention_mask=mask)


LAYERS = {  # name: (Attention kwargs, hidden shape, context shape or None, dtype, kernel expected)
    "self_head8": (dict(query_dim=32, heads=4, dim_head=8), (2, 37, 32), None, torch.float32, True),
    "cross_head4_normed": (dict(query_dim=16, cross_attention_dim=24, heads=4, dim_head=4,
                                cross_attention_norm="layer_norm"), (2, 20, 16), (2, 77, 24), torch.float32, True),
    "spatial_residual": (dict(query_dim=32, heads=8, dim_head=4, residual_connection=True,
                              rescale_output_factor=2.0), (2, 32, 5, 7), None, torch.float32, True),
    "head16": (dict(query_dim=32, heads=2, dim_head=16), (2, 37, 32), None, torch.float32, False),
    "fp64": (dict(query_dim=32, heads=4, dim_head=8), (2, 37, 32), None, torch.float64, False),
    "group_norm": (dict(query_dim=32, heads=4, dim_head=8, norm_num_groups=8), (2, 37, 32), None,
                   torch.float32, False),
}


@pytest.mark.parametrize("name", LAYERS)
def test_processor_matches_attn_processor_2_0(name, kernel, kernel_calls):
    kwargs, hidden_shape, context_shape, dtype, kernel_expected = LAYERS[name]
    torch.manual_seed(0)
    attn = Attention(**kwargs).to(dtype)
    hidden = torch.randn(hidden_shape, dtype=dtype)
    context = torch.randn(context_shape, dtype=dtype) if context_shape else None
    mine = run_layer(attn, SmallHeadAttnProcessor(), hidden, context)
    assert len(kernel_calls) == int(kernel_expected)
    ref = run_layer(attn, AttnProcessor2_0(), hidden, context)
    assert mine.shape == ref.shape and mine.dtype == dtype
    assert rel_err(mine, ref) < 1e-5


def test_a_mask_goes_to_sdpa_and_is_applied(kernel, kernel_calls):
    torch.manual_seed(0)
    attn = Attention(query_dim=32, heads=4, dim_head=8)
    hidden = torch.randn(2, 20, 32)
    mask = torch.zeros(2, 1, 20)
    mask[:, :, 10:] = -10000.0                       # the second half of the keys is masked out
    mine = run_layer(attn, SmallHeadAttnProcessor(), hidden, mask=mask)
    assert kernel_calls == []
    assert rel_err(mine, run_layer(attn, AttnProcessor2_0(), hidden, mask=mask)) < 1e-5
    assert rel_err(mine, run_layer(attn, AttnProcessor2_0(), hidden)) > 1e-3   # the mask mattered


# ---- the processor in the tiny UNet -------------------------------------------------------------

def small_head_layers(unet) -> list[Attention]:
    return [m for m in unet.modules() if isinstance(m, Attention) and m.to_q.out_features // m.heads in (4, 8)]


def unet_inputs():
    gen = torch.Generator().manual_seed(7)
    # 10x10 latents: 100 self-attention tokens, not a multiple of the kernel's 16-key blocks
    return torch.randn(2, 4, 10, 10, generator=gen), torch.tensor([10, 700]), torch.randn(2, 77, 32, generator=gen)


def unet_run(model, processor, network=None):
    """UNet output, and the LoRA gradients of a fixed loss when a network is attached."""
    model.unet.set_attn_processor(processor)
    latents, timesteps, context = unet_inputs()
    if network is None:
        with torch.no_grad():
            return model.unet(latents, timesteps, encoder_hidden_states=context).sample, {}
    network.zero_grad(set_to_none=True)
    out = model.unet(latents, timesteps, encoder_hidden_states=context).sample
    (out.square().mean()).backward()
    return out.detach(), {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


def test_tiny_unet_output_is_the_same_with_the_kernel(tiny, kernel, kernel_calls):
    mine, _ = unet_run(tiny, SmallHeadAttnProcessor())
    # The 32-channel levels have head size 8 (kernel); the 64-channel mid block 16 (SDPA).
    assert len(kernel_calls) == len(small_head_layers(tiny.unet)) == 6 < len(tiny.unet.attn_processors)
    ref, _ = unet_run(tiny, AttnProcessor2_0())
    assert rel_err(mine, ref) < 1e-5


def test_tiny_unet_lora_gradients_are_the_same_with_the_kernel(tiny, kernel, kernel_calls):
    torch.manual_seed(0)
    network = create_network(tiny.network_targets(True, False), NetworkConfig(dim=4, alpha=4.0))
    for p in network.parameters():       # lora_up starts at zero: give every factor a value
        torch.nn.init.normal_(p, std=0.1)
    network.attach()
    try:
        mine, mine_grads = unet_run(tiny, SmallHeadAttnProcessor(), network)
        assert kernel_calls
        ref, ref_grads = unet_run(tiny, AttnProcessor2_0(), network)
    finally:
        network.detach()
    assert rel_err(mine, ref) < 1e-5
    assert mine_grads.keys() == ref_grads.keys() and len(ref_grads) > 20
    assert any("to_q" in n for n in ref_grads)   # attention projections, upstream of the kernel, learn
    for name, grad in ref_grads.items():
        assert float(grad.abs().max()) > 0, name
        assert rel_err(mine_grads[name], grad) < 1e-4, f"{name}: {rel_err(mine_grads[name], grad):.2e}"
