"""resize.py: same rank is lossless, a lower rank loses exactly the discarded singular values' share."""
from __future__ import annotations

import math

import pytest
import torch

from lib_lora.networks.keys import checkpoint_param_to_lora_key
from lib_lora.ops.config import ResizeConfig
from lib_lora.ops.resize import resize_lora, resized_metadata
from ops_fixtures import ATTN_K2, ATTN_Q, CONV3, PROJ_IN, lora_product, make_lora, rel

TARGETS = [ATTN_Q, ATTN_K2, PROJ_IN, CONV3]


def _key(name):
    return checkpoint_param_to_lora_key(name, "sd1")


def test_same_rank_is_lossless_and_keeps_the_scale():
    lora = make_lora(TARGETS, rank=4, alpha=2.0)
    out, report = resize_lora(lora, ResizeConfig(dim=4, precision="fp32"))
    for name in TARGETS:
        key = _key(name)
        assert rel(lora_product(out, key), lora_product(lora, key)) < 1e-5
        assert float(out[f"{key}.alpha"]) == pytest.approx(2.0)            # scale alpha/dim stays 0.5
        assert out[f"{key}.lora_down.weight"].dim() == lora[f"{key}.lora_down.weight"].dim()
    assert report.overall_relative_error() < 1e-5


def test_lower_rank_error_is_the_discarded_singular_values_share():
    lora = make_lora(TARGETS, rank=4, alpha=4.0)
    out, report = resize_lora(lora, ResizeConfig(dim=2, conv_dim=1, precision="fp32"))
    for name in TARGETS:
        key = _key(name)
        s = torch.linalg.svdvals(lora_product(lora, key).double())
        kept = 1 if name == CONV3 else 2
        share = math.sqrt(float((s[kept:] ** 2).sum() / (s ** 2).sum()))
        row = next(r for r in report.layers if r.layer == key)
        assert row.rank == kept
        assert row.relative_error == pytest.approx(share, rel=1e-4)
        assert rel(lora_product(out, key), lora_product(lora, key)) == pytest.approx(share, rel=1e-4)
        assert row.energy_kept == pytest.approx(1 - share ** 2, rel=1e-4)


def test_dynamic_resize_and_metadata():
    lora = make_lora([ATTN_Q, ATTN_K2], rank=4, alpha=4.0)
    out, report = resize_lora(lora, ResizeConfig(dim=4, dynamic="sv_fro", dynamic_param=0.5, precision="fp32"))
    assert all(1 <= row.rank <= 4 for row in report.written)
    meta = resized_metadata({"ss_network_dim": "4", "sshs_model_hash": "old"}, out,
                            ResizeConfig(dim=4, dynamic="sv_fro", dynamic_param=0.5), report)
    assert meta["ss_network_dim"] == "Dynamic" and "sshs_model_hash" not in meta
    assert "Dynamic resize" in meta["ss_training_comment"]
    fixed, fixed_report = resize_lora(lora, ResizeConfig(dim=2))
    meta = resized_metadata({"ss_network_dim": "4"}, fixed, ResizeConfig(dim=2), fixed_report)
    assert meta["ss_network_dim"] == "2" and meta["ss_network_alpha"] == "2"  # alpha 4 / dim 4 * 2
