"""LoraNetwork on tiny models: attach/detach, selection, groups, state, OpenCLIP attention."""
from __future__ import annotations

from collections import OrderedDict

import pytest
import torch
from torch import nn

from lib_lora.config import NetworkConfig
from lib_lora.errors import ModelError, NetworkFileError
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import create_network


def unet_inputs():
    torch.manual_seed(3)
    return torch.randn(1, 4, 8, 8), torch.tensor([10]), torch.randn(1, 5, 32)


def perturb(net):
    torch.manual_seed(4)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.05)


@pytest.mark.parametrize("algo", ["lora", "locon", "loha", "lokr"])
def test_attach_detach_on_unet_is_bit_exact(sd1_unet, clip_te, algo):
    x, t, ctx = unet_inputs()
    with torch.no_grad():
        before = sd1_unet(x, t, ctx).sample
    targets = [NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet"),
               NetworkTarget("lora_te", clip_te, "hf_clip", "text_encoder")]
    net = create_network(targets, NetworkConfig(algo=algo, dim=4, alpha=2, conv_dim=2))
    assert all("forward" not in m.__dict__ for m in sd1_unet.modules()), "building must not touch the model"
    perturb(net)
    net.attach()
    with torch.no_grad():
        changed = sd1_unet(x, t, ctx).sample
        net.set_multiplier(0.0)
        assert torch.equal(sd1_unet(x, t, ctx).sample, before)
        net.set_multiplier(1.0)
        net.merge()
        assert torch.allclose(sd1_unet(x, t, ctx).sample, changed, atol=1e-5)
    assert not torch.allclose(changed, before)
    net.detach()  # also unmerges
    assert all("forward" not in m.__dict__ for m in list(sd1_unet.modules()) + list(clip_te.modules()))
    with torch.no_grad():
        assert torch.allclose(sd1_unet(x, t, ctx).sample, before, atol=1e-6)


def test_detach_without_merge_is_bit_identical(sd1_unet):
    x, t, ctx = unet_inputs()
    with torch.no_grad():
        before = sd1_unet(x, t, ctx).sample
    net = create_network([NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")], NetworkConfig())
    perturb(net)
    net.attach()
    net.detach()
    with torch.no_grad():
        assert torch.equal(sd1_unet(x, t, ctx).sample, before)


def test_ranks_param_groups_and_te_switch(sd1_unet, clip_te):
    targets = [NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet"),
               NetworkTarget("lora_te", clip_te, "hf_clip", "text_encoder")]
    net = create_network(targets, NetworkConfig(algo="locon", dim=8, alpha=4, conv_dim=3, conv_alpha=1))
    mods = net.lora_modules
    assert mods["lora_unet_down_blocks_0_resnets_0_conv1"].lora_down.weight.shape == (3, 32, 3, 3)
    assert mods["lora_unet_down_blocks_0_attentions_0_proj_in"].lora_down.weight.shape[0] == 8
    groups = net.param_groups(1e-4, 0.0)
    assert [g["name"] for g in groups] == ["unet"]
    assert [g["lr"] for g in net.param_groups(1e-4, 5e-5)] == [1e-4, 5e-5]
    grouped = sum(p.numel() for g in net.param_groups(1, 1) for p in g["params"])
    assert grouped == sum(p.numel() for p in net.parameters())          # every parameter in some group
    no_te = create_network(targets, NetworkConfig(train_text_encoder=False))
    assert not any(k.startswith("lora_te") for k in no_te.module_names())


def test_block_include_exclude(sd1_unet):
    target = [NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")]
    ups = create_network(target, NetworkConfig(block_include="up_blocks")).module_names()
    assert ups and all(k.startswith("lora_unet_up_blocks") for k in ups)
    rest = create_network(target, NetworkConfig(block_exclude="up_blocks, mid_block")).module_names()
    assert rest and all(k.startswith("lora_unet_down_blocks") for k in rest)
    with pytest.raises(ModelError, match="selects no layer"):
        create_network(target, NetworkConfig(block_include="nothing_like_this"))


def test_trainable_state_round_trip(sd1_unet):
    target = [NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet")]
    net = create_network(target, NetworkConfig(algo="loha", dora=True))
    perturb(net)
    state = net.trainable_state()
    assert "lora_unet_down_blocks_0_attentions_0_proj_in.hada_w1_a" in state
    assert all(v.dtype == torch.float32 for v in state.values())
    other = create_network(target, NetworkConfig(algo="loha", dora=True))
    other.load_trainable_state(state)
    assert all(torch.equal(v, other.trainable_state()[k]) for k, v in state.items())
    with pytest.raises(NetworkFileError, match="missing"):
        other.load_trainable_state({k: v for k, v in state.items() if "proj_in" not in k})


class TinyOpenClip(nn.Module):
    """The module names of OpenCLIP's text transformer (what SD2 / SDXL's second encoder use)."""

    def __init__(self, width: int = 16, layers: int = 2):
        super().__init__()
        blocks = []
        for _ in range(layers):
            block = nn.Module()
            block.ln_1, block.ln_2 = nn.LayerNorm(width), nn.LayerNorm(width)
            block.attn = nn.MultiheadAttention(width, 2)
            block.mlp = nn.Sequential(OrderedDict(c_fc=nn.Linear(width, 32), gelu=nn.GELU(),
                                                  c_proj=nn.Linear(32, width)))
            blocks.append(block)
        self.transformer = nn.Module()
        self.transformer.resblocks = nn.ModuleList(blocks)

    def forward(self, x):
        for block in self.transformer.resblocks:
            h = block.ln_1(x)
            x = x + block.attn(h, h, h, need_weights=False)[0]
            x = x + block.mlp(block.ln_2(x))
        return x


@pytest.mark.parametrize("algo", ["lora", "lokr"])
def test_open_clip_attention_gets_four_keys_and_works(algo):
    torch.manual_seed(0)
    model = TinyOpenClip()
    x = torch.randn(5, 1, 16)
    before = model(x)
    net = create_network([NetworkTarget("lora_te2", model, "open_clip", "text_encoder")],
                         NetworkConfig(algo=algo, dim=4))
    names = net.module_names()
    assert {f"lora_te2_text_model_encoder_layers_0_self_attn_{p}_proj" for p in ("q", "k", "v", "out")} <= set(names)
    assert "lora_te2_text_model_encoder_layers_1_mlp_fc1" in names and len(names) == 12
    perturb(net)
    net.attach()
    attached = model(x)
    assert not torch.allclose(attached, before)
    net.merge()
    assert torch.allclose(model(x), attached, atol=1e-5)
    net.detach()
    assert torch.allclose(model(x), before, atol=1e-6)
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert set(net.trainable_state()) >= {f"{n}.alpha" for n in names}
