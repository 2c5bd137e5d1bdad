"""Our LoRA and LoCon files load in diffusers' `load_lora_weights` (another tool's reader).

For the tiny SD1 and SDXL-shaped pipelines: every module key of the file becomes one
PEFT-injected layer in the right model part (no unexpected or missing keys, nothing
dropped silently), the layers diffusers builds compute exactly what our attached
network computes (so each key landed on the module it was trained on), and the
generated image changes.
"""
from __future__ import annotations

import copy
import logging
import warnings

import pytest
import torch
from safetensors.torch import load_file

from lib_lora.config import NetworkConfig
from lib_lora.models.diffusers_adapter import DiffusersModel
from lib_lora.models.tiny import build_tiny_sd1, build_tiny_sdxl
from lib_lora.networks import build_metadata, create_network, save_network_file
from tests.fixtures.library_logs import library_warnings

BUILDERS = {"sd1": build_tiny_sd1, "sdxl": build_tiny_sdxl}
# file prefix -> pipeline attribute holding that model part
PARTS = {"sd1": {"lora_unet": "unet", "lora_te": "text_encoder"},
         "sdxl": {"lora_unet": "unet", "lora_te1": "text_encoder", "lora_te2": "text_encoder_2"}}


def _injected_layers(module: torch.nn.Module) -> int:
    return sum(1 for m in module.modules() if len(getattr(m, "lora_A", None) or ()) > 0)


def _model_outputs(pipe, family: str) -> list[torch.Tensor]:
    """Text-encoder hidden states and one UNet prediction on fixed inputs."""
    gen = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 1000, (1, 77), generator=gen)
    latents, timestep = torch.randn(1, 4, 16, 16, generator=gen), torch.tensor([500])
    with torch.no_grad():
        outputs = [pipe.text_encoder(ids)[0]]
        if family == "sdxl":
            outputs.append(pipe.text_encoder_2(ids, output_hidden_states=True).hidden_states[-2])
            added = {"text_embeds": torch.randn(1, 32, generator=gen),
                     "time_ids": torch.tensor([[64.0, 64, 0, 0, 64, 64]])}
            context = torch.randn(1, 77, 64, generator=gen)
            outputs.append(pipe.unet(latents, timestep, context, added_cond_kwargs=added).sample)
        else:
            outputs.append(pipe.unet(latents, timestep, torch.randn(1, 77, 32, generator=gen)).sample)
    return outputs


def _generate(pipe) -> torch.Tensor:
    return pipe("shp, a square", num_inference_steps=1, width=64, height=64, output_type="latent",
                generator=torch.Generator().manual_seed(3)).images


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("algo", ["lora", "locon"])
def test_file_loads_in_diffusers_with_every_key_on_its_module(tmp_path, family, algo):
    pipe = BUILDERS[family]()
    ours = copy.deepcopy(pipe)  # carries our attached network; `pipe` gets diffusers' loader
    cfg = NetworkConfig(algo=algo, dim=4, alpha=2.0, conv_dim=4, conv_alpha=1.0)
    network = create_network(DiffusersModel(ours).network_targets(True, True), cfg)
    with torch.no_grad():  # a fresh network has up == 0 and would change nothing
        for name, param in network.named_parameters():
            if "lora_up" in name:
                param.normal_(0.0, 0.2)
    path = save_network_file(tmp_path / f"{family}_{algo}.safetensors", network.trainable_state(),
                             build_metadata(cfg, family, title="t"), "fp32")
    state = load_file(str(path))
    before = _generate(pipe)

    with library_warnings() as messages:
        pipe.load_lora_weights(dict(state))
    assert not [m for m in messages if "unexpected" in m.lower() or "missing" in m.lower()], messages
    modules = {key.split(".")[0] for key in state}
    for prefix, attr in PARTS[family].items():
        in_file = sum(1 for key in modules if key.startswith(prefix + "_"))
        assert in_file > 0 and _injected_layers(getattr(pipe, attr)) == in_file, (prefix, attr)
    if algo == "locon":  # the 3x3 ResNet convs are in the file (and were counted above)
        assert any(t.dim() == 4 and t.shape[-1] == 3 for t in state.values())

    network.attach()
    for theirs, mine in zip(_model_outputs(pipe, family), _model_outputs(ours, family)):
        torch.testing.assert_close(theirs, mine, rtol=1e-4, atol=1e-4)
    assert (_generate(pipe) - before).abs().mean() > 1e-3


def test_library_warnings_hears_diffusers_and_peft():
    """The check above is only as good as its listener: diffusers' logger does not propagate."""
    with library_warnings() as messages:
        logging.getLogger("diffusers.utils.peft_utils").warning("led to unexpected keys")
        logging.getLogger("peft.tuners").warning("missing adapter keys")
        warnings.warn("Found missing adapter keys")
    assert len(messages) == 3
