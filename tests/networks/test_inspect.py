"""inspect: algorithm, ranks and the base-model match of a file."""
from __future__ import annotations

from types import SimpleNamespace

import torch

from lib_lora.config import NetworkConfig
from lib_lora.networks.target import NetworkTarget
from lib_lora.networks import build_metadata, create_network, save_network_file
from lib_lora.networks.inspect import base_keys_from_targets, format_report, inspect_command, inspect_file


def test_inspect_matches_own_file_and_flags_foreign_keys(tmp_path, sd1_unet, clip_te, capsys):
    targets = [NetworkTarget("lora_unet", sd1_unet, "diffusers", "unet"),
               NetworkTarget("lora_te", clip_te, "hf_clip", "text_encoder")]
    cfg = NetworkConfig(algo="loha", dim=4, alpha=2)
    net = create_network(targets, cfg)
    path = save_network_file(tmp_path / "a.safetensors", net.trainable_state(),
                             build_metadata(cfg, "sd1", title="a"), "fp16")
    base = base_keys_from_targets(targets)
    report = inspect_file(path, base)
    assert report.base_checked and report.unmatched == [] and report.algorithms == {"loha": len(net.module_names())}
    assert "Base model: 60 of 60 modules match" in format_report(report)
    assert inspect_command(SimpleNamespace(file=str(path), base=None)) == 0
    assert "lycoris.kohya" in capsys.readouterr().out
    foreign = dict(net.trainable_state())
    foreign["lora_unet_input_blocks_99_1_proj_in.lora_down.weight"] = torch.zeros(2, 4)
    foreign["lora_unet_input_blocks_99_1_proj_in.lora_up.weight"] = torch.zeros(4, 2)
    report = inspect_file(save_network_file(tmp_path / "b.safetensors", foreign, {}, "fp32"), base)
    assert report.unmatched == ["lora_unet_input_blocks_99_1_proj_in"]
    assert "lora_unet_input_blocks_99_1_proj_in" in format_report(report)
