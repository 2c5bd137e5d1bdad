"""networks.detect, the one reader of a file's algorithm, rank and alpha: unit cases for every
layout, a round trip (network -> file tensors -> inferred config -> the same network), and the
three consumers (inspect, headless rendering, ops) agreeing on the same file."""
from __future__ import annotations

import pytest
import torch

from lib_lora.config import NetworkConfig
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import create_network, save_network_file
from lib_lora.networks.detect import conv3x3_keys, group_parts, module_kind, network_config_for
from lib_lora.networks.inspect import inspect_file
from lib_lora.ops.lora_delta import group_modules

R = torch.randn


@pytest.mark.parametrize("parts, algo, rank, conv3x3, tucker", [
    ({"lora_down.weight": R(4, 32), "lora_up.weight": R(16, 4)}, "lora", 4, False, False),
    ({"lora_down.weight": R(4, 32, 1, 1), "lora_up.weight": R(16, 4, 1, 1)}, "lora", 4, False, False),
    ({"lora_down.weight": R(2, 32, 3, 3), "lora_up.weight": R(16, 2, 1, 1)}, "locon", 2, True, False),
    ({"lora_down.weight": R(2, 32, 1, 1), "lora_mid.weight": R(2, 2, 3, 3), "lora_up.weight": R(16, 2, 1, 1)},
     "locon", 2, True, True),
    ({"lora_A.weight": R(8, 32), "lora_B.weight": R(16, 8)}, "lora", 8, False, False),      # PEFT names
    ({"lora_down.weight": R(4, 32)}, "unknown", None, None, False),                          # no up: broken
    ({"hada_w1_a": R(16, 4), "hada_w1_b": R(4, 288), "hada_w2_a": R(16, 4), "hada_w2_b": R(4, 288)},
     "loha", 4, None, False),                                         # a folded kernel: shapes cannot tell
    ({"hada_w1_a": R(16, 4), "hada_w1_b": R(4, 32), "hada_w2_a": R(16, 4), "hada_w2_b": R(4, 32),
      "hada_t1": R(4, 4, 3, 3), "hada_t2": R(4, 4, 3, 3)}, "loha", 4, True, True),
    ({"lokr_w1": R(4, 4), "lokr_w2_a": R(8, 2), "lokr_w2_b": R(2, 8)}, "lokr", 2, None, False),
    ({"lokr_w1_a": R(4, 3), "lokr_w1_b": R(3, 4), "lokr_w2_a": R(8, 2), "lokr_w2_b": R(2, 8)},
     "lokr", 2, None, False),                                         # both decomposed: w2_b's rank, as the WebUI
    ({"lokr_w1_a": R(4, 3), "lokr_w1_b": R(3, 4), "lokr_w2": R(8, 8)}, "lokr", 3, False, False),
    ({"lokr_w1": R(4, 4), "lokr_w2": R(8, 8)}, "lokr", None, False, False),               # full matrices
    ({"lokr_w1": R(4, 4), "lokr_w2": R(8, 8, 3, 3)}, "lokr", None, True, False),
    ({"diff": R(16, 32)}, "full", None, None, False),
    ({"oft_blocks": R(4, 8, 8)}, "oft", None, None, False),
])
def test_module_kind_reads_algorithm_rank_and_shape(parts, algo, rank, conv3x3, tucker):
    kind = module_kind({**parts, "alpha": torch.tensor(3.0)})
    assert (kind.algo, kind.rank, kind.conv3x3, kind.tucker, kind.alpha) == (algo, rank, conv3x3, tucker, 3.0)
    assert module_kind(parts).alpha is None and not kind.dora


def test_dora_and_inspect_label():
    kind = module_kind({"lora_down.weight": R(4, 32), "lora_up.weight": R(16, 4), "dora_scale": R(16, 1)})
    assert kind.dora and kind.label == "lora+dora" and kind.rank == 4
    old = module_kind({"lora_down.weight": R(4, 32), "lora_up.weight": R(16, 4), "dora_scale": R(1, 32)})
    assert old.dora_per_input and old.label == "lora+dora(per-input)"


def _targets(sd1_unet, clip_te):
    return [NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet"),
            NetworkTarget("lora_te", clip_te, "hf_clip", "text_encoder")]


def _random_state(network, seed: int) -> dict[str, torch.Tensor]:
    """The network's file tensors with every trained tensor random (a fresh network changes nothing)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in network.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
    return network.trainable_state()


@pytest.mark.parametrize("cfg", [
    NetworkConfig(algo="lora", dim=4, alpha=2.0),
    NetworkConfig(algo="locon", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0),
    NetworkConfig(algo="loha", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0, targets="attn_ff_conv"),
    NetworkConfig(algo="lokr", dim=2, alpha=1.0, conv_dim=2, conv_alpha=1.0, targets="attn_ff_conv"),
    NetworkConfig(algo="lokr", dim=64, alpha=64.0, train_text_encoder=False),            # full w2 everywhere
    NetworkConfig(algo="lokr", dim=2, alpha=1.0, lokr_factor=4, train_text_encoder=False),
    NetworkConfig(algo="lora", dim=4, alpha=4.0, dora=True),
], ids=["lora", "locon", "loha_conv", "lokr_conv", "lokr_full", "lokr_factor4", "dora"])
def test_inferred_config_rebuilds_the_same_network(sd1_unet, clip_te, cfg):
    targets = _targets(sd1_unet, clip_te)
    original = create_network(targets, cfg)
    state = _random_state(original, seed=1)
    inferred = network_config_for(state, conv3x3_keys(targets))
    for field in ("algo", "train_unet", "train_text_encoder", "dora", "lokr_factor"):
        assert getattr(inferred, field) == getattr(cfg, field), field
    assert inferred.targets == ("attn_ff_conv" if cfg.algo == "locon" else cfg.targets)   # locon implies convs
    if cfg.algo != "lokr" or cfg.dim < 64:
        assert (inferred.dim, inferred.alpha) == (cfg.dim, cfg.alpha)
    rebuilt = create_network([t for t in targets if t.kind == "unet" or inferred.train_text_encoder], inferred)
    rebuilt.load_trainable_state(state, strict=True)               # every tensor fits, none missing
    before = dict(original.named_modules())
    for name, module in rebuilt.named_modules():
        if hasattr(module, "delta_weight") and name:
            assert torch.allclose(module.delta_weight(), before[name].delta_weight()), name


def test_without_conv_keys_loha_convs_count_as_linear(sd1_unet, clip_te):
    """LoHa folds a conv's kernel, so only the model's conv keys place those modules."""
    targets = _targets(sd1_unet, clip_te)
    cfg = NetworkConfig(algo="loha", dim=4, conv_dim=2, targets="attn_ff_conv")
    state = _random_state(create_network(targets, cfg), seed=2)
    assert network_config_for(state).targets == "attn_ff"
    assert network_config_for(state, conv3x3_keys(targets)).conv_dim == 2


def test_inspect_rendering_and_ops_agree_on_one_file(tmp_path, sd1_unet, clip_te):
    targets = _targets(sd1_unet, clip_te)
    cfg = NetworkConfig(algo="locon", dim=4, alpha=2.0, conv_dim=2, conv_alpha=1.0)
    state = _random_state(create_network(targets, cfg), seed=3)
    key = next(k for k in group_parts(state) if k.startswith("lora_unet"))
    # a LyCORIS-style LoKr module beside them, both halves decomposed with different ranks
    state.update({f"{key}_x.lokr_w1_a": R(4, 3), f"{key}_x.lokr_w1_b": R(3, 4), f"{key}_x.lokr_w2_a": R(8, 2),
                  f"{key}_x.lokr_w2_b": R(2, 8), f"{key}_x.alpha": torch.tensor(1.0)})
    path = save_network_file(tmp_path / "mix.safetensors", state, {}, "fp32")
    report = {m.key: m for m in inspect_file(path).modules}
    ops = group_modules(state)
    for name, parts in group_parts(state).items():
        kind = module_kind(parts)
        assert (report[name].algo, report[name].rank, report[name].alpha) == (kind.label, kind.rank, kind.alpha)
        assert ops[name].dim() == kind.rank and ops[name].algo == ("lora" if kind.algo == "locon" else kind.algo)
    assert ops[f"{key}_x"].scale() == pytest.approx(0.5)         # alpha / the rank the WebUI reads (w2_b)


def test_headless_rendering_loads_every_module_of_a_loha_conv_file(tmp_path):
    from lib_lora.evaluation.render_diffusers import load_file_network
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sd1

    model = DiffusersModel(build_tiny_sd1(seed=0), name="tiny")
    cfg = NetworkConfig(algo="loha", dim=4, conv_dim=2, targets="attn_ff_conv")
    state = _random_state(create_network(model.network_targets(True, True), cfg), seed=4)
    network = load_file_network(model, save_network_file(tmp_path / "h.safetensors", state, {}, "fp32"))
    loaded = network.trainable_state()
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
