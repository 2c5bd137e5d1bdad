"""`training.sdpa` on the diffusers backend: SDPA (AttnProcessor2_0) when on, diffusers' plain
AttnProcessor when off, chosen by the trainer from the option, and the same outputs and LoRA
gradients either way (the plain processor is the independent reference).
"""
from __future__ import annotations

import pytest
import torch
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

from lib_lora.config import NetworkConfig, TrainConfig
from lib_lora.networks import create_network


@pytest.fixture(scope="module")
def tiny():
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1

    return DiffusersModel(build_tiny_sd1(seed=0), name="tiny")


def processor_types(model) -> set[type]:
    return {type(p) for p in model.unet.attn_processors.values()}


def rel_err(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).detach().abs().max() / expected.detach().abs().max())


def test_set_attention_picks_the_processor_the_option_asks_for(tiny):
    assert tiny.set_attention(True) == ""
    assert processor_types(tiny) == {AttnProcessor2_0}
    assert tiny.set_attention(False) == ""
    assert processor_types(tiny) == {AttnProcessor}


@pytest.mark.parametrize("sdpa, expected", [(True, AttnProcessor2_0), (False, AttnProcessor)])
def test_the_trainer_honours_training_sdpa(tiny, sdpa, expected):
    from lib_lora.training.hooks import HookCaller
    from lib_lora.training.trainer import _prepare_model

    tiny.unet.set_attn_processor(AttnProcessor2_0() if not sdpa else AttnProcessor())  # the other one
    cfg = TrainConfig()
    cfg.training.mixed_precision = "no"
    cfg.training.sdpa = sdpa
    _prepare_model(cfg, tiny, HookCaller([]))
    assert processor_types(tiny) == {expected}


def unet_run(model, processor, network):
    """UNet output and the LoRA gradients of a fixed loss."""
    model.unet.set_attn_processor(processor)
    gen = torch.Generator().manual_seed(7)
    latents, context = torch.randn(2, 4, 10, 10, generator=gen), torch.randn(2, 77, 32, generator=gen)
    network.zero_grad(set_to_none=True)
    out = model.unet(latents, torch.tensor([10, 700]), encoder_hidden_states=context).sample
    out.square().mean().backward()
    return out.detach(), {n: p.grad.clone() for n, p in network.named_parameters() if p.grad is not None}


def test_sdpa_gives_the_plain_attention_outputs_and_lora_gradients(tiny):
    torch.manual_seed(0)
    network = create_network(tiny.network_targets(True, False), NetworkConfig(dim=4, alpha=4.0))
    for p in network.parameters():       # lora_up starts at zero: give every factor a value
        torch.nn.init.normal_(p, std=0.1)
    network.attach()
    try:
        mine, mine_grads = unet_run(tiny, AttnProcessor2_0(), network)
        ref, ref_grads = unet_run(tiny, AttnProcessor(), network)
    finally:
        network.detach()
    assert rel_err(mine, ref) < 1e-5
    assert mine_grads.keys() == ref_grads.keys() and len(ref_grads) > 20
    assert any("to_q" in n for n in ref_grads)   # attention projections, upstream of the attention, learn
    for name, grad in ref_grads.items():
        assert float(grad.abs().max()) > 0, name
        assert rel_err(mine_grads[name], grad) < 1e-4, f"{name}: {rel_err(mine_grads[name], grad):.2e}"
