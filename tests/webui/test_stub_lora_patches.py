"""The stand-in patches torch.nn layers class-wide as the built-in Lora extension does, so WebUI-path
tests train through those patches: the patched forwards merge a loaded LoRA lazily, loading a
state dict forgets a layer's backups, undo puts torch's own functions back, and a training step
inside a session runs every base Linear through network_Linear_forward."""
from __future__ import annotations

import torch

from lib_lora.config import NetworkConfig, TrainConfig
from lib_lora.networks import create_network
from lib_lora.webui.model_bridge import training_session
from tests.webui.conftest import load_family
from tests.webui.test_stub import _write_lora

PATCHED = (torch.nn.Linear, torch.nn.Conv2d, torch.nn.GroupNorm, torch.nn.LayerNorm, torch.nn.MultiheadAttention)


def test_layers_are_patched_class_wide_with_the_originals_kept(webui):
    networks = webui.networks
    for cls in PATCHED:
        name = cls.__name__
        assert cls.forward is getattr(networks, f"network_{name}_forward")
        assert cls._load_from_state_dict is getattr(networks, f"network_{name}_load_state_dict")
        assert getattr(networks.originals, f"{name}_forward").__module__.startswith("torch.nn.modules")


def test_a_loaded_lora_merges_in_the_patched_forward_and_a_state_dict_load_forgets_backups(fresh_state):
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    layer = sd_model.model.diffusion_model.input_blocks[1][1].transformer_blocks[0].attn1.to_q
    real = layer.weight.detach().clone()
    _write_lora(webui, "lazy", layer.weight.shape)
    webui.networks.load_networks(["lazy"])
    assert torch.equal(layer.weight, real)                  # nothing merged until the layer runs
    with torch.no_grad():
        layer(torch.randn(1, layer.in_features))
    assert not torch.equal(layer.weight, real) and torch.equal(layer.network_weights_backup, real)
    webui.networks.loaded_networks.clear()
    with torch.no_grad():
        layer(torch.randn(1, layer.in_features))            # no network wanted: the backup comes back
    assert torch.equal(layer.weight, real)
    layer.load_state_dict({"weight": real.clone()})
    assert layer.network_weights_backup is None and layer.network_current_names == ()


def test_undo_puts_torchs_own_functions_back(webui):
    import lora_patches
    networks = webui.networks
    originals = {cls: (cls.forward, cls._load_from_state_dict) for cls in PATCHED}
    torch_own = {cls: (getattr(networks.originals, f"{cls.__name__}_forward"),
                       getattr(networks.originals, f"{cls.__name__}_load_state_dict")) for cls in PATCHED}
    networks.originals.undo()
    try:
        assert {cls: (cls.forward, cls._load_from_state_dict) for cls in PATCHED} == torch_own
    finally:
        networks.originals = lora_patches.LoraPatches()
    assert {cls: (cls.forward, cls._load_from_state_dict) for cls in PATCHED} == originals


def test_a_training_step_runs_through_the_patched_forwards(fresh_state, monkeypatch):
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    unet_linears = {m for m in sd_model.model.diffusion_model.modules() if type(m) is torch.nn.Linear}
    ran: set = set()                  # the layers whose forward asked the built-in Lora to merge
    apply_weights = webui.networks.network_apply_weights
    monkeypatch.setattr(webui.networks, "network_apply_weights", lambda self: ran.add(self) or apply_weights(self))
    with training_session(sd_model, webui.shared.opts, TrainConfig()) as model:
        network = create_network(model.network_targets(True, False), NetworkConfig(dim=2, alpha=1.0))
        network.attach()
        try:
            model.set_attention(True)
            cond = model.encode_text(["a cat"], 1, 75)
            model.predict(torch.randn(1, 4, 8, 8), torch.tensor([100]), cond).square().mean().backward()
        finally:
            network.detach()
    wrapped = {module.layer for module in network.lora_modules.values()}
    assert unet_linears & wrapped and unet_linears <= ran   # LoRA-wrapped layers too, via their original
