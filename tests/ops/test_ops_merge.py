"""merge_checkpoint.py and merge_loras.py: exact sums, the WebUI's scale, block weights, safe files."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch
from safetensors import safe_open

from lib_lora.errors import LoraError, NetworkFileError
from lib_lora.networks.keys import checkpoint_param_to_lora_key
from lib_lora.ops.blocks import BLOCK_NAMES, block_of, parse_block_weights
from lib_lora.ops.config import MergeConfig
from lib_lora.ops.lora_inputs import load_lora_inputs
from lib_lora.ops.merge_checkpoint import merge_into_checkpoint
from lib_lora.ops.merge_loras import merge_loras
from ops_fixtures import ATTN_K2, ATTN_Q, CONV3, PROJ_IN, TE_Q, lora_product, make_lora, rel, save, tiny_sd1

TARGETS = [ATTN_Q, ATTN_K2, PROJ_IN, CONV3, TE_Q]


def _read(path) -> tuple[dict, dict]:
    with safe_open(str(path), "pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _key(name):
    return checkpoint_param_to_lora_key(name, "sd1")


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_merge_into_checkpoint_is_weight_plus_scaled_delta(tmp_path):
    base = tiny_sd1()
    base_file = save(tmp_path / "base.safetensors", base, {"modelspec.title": "base"})
    lora = make_lora(TARGETS, rank=4, alpha=2.0)
    lora_file = save(tmp_path / "a.safetensors", lora)
    before = _sha(base_file)
    inputs = load_lora_inputs([lora_file], [0.7], [])
    out = tmp_path / "merged.safetensors"
    report = merge_into_checkpoint(base_file, inputs, out, MergeConfig(weights=[0.7], precision="fp32"))
    merged, meta = _read(out)
    assert _sha(base_file) == before                       # the base is untouched on disk
    for name in TARGETS:
        expected = base[name] + 0.7 * lora_product(lora, _key(name)).reshape(base[name].shape)  # alpha/rank*weight
        assert torch.allclose(merged[name], expected, atol=1e-6, rtol=0)
    untouched = [k for k in base if k not in TARGETS]
    assert all(torch.equal(merged[k], base[k]) for k in untouched)
    assert merged["cond_stage_model.transformer.text_model.embeddings.position_ids"].dtype == torch.int64
    assert json.loads(meta["lib_lora_merge"])["loras"][0]["weight"] == 0.7 and meta["modelspec.title"] == "base"
    assert len(report.written) == len(TARGETS) and report.overall_relative_error() < 1e-6


def test_fp16_default_drop_ema_and_base_is_never_overwritten(tmp_path):
    base_file = save(tmp_path / "base.safetensors", tiny_sd1())
    inputs = load_lora_inputs([make_lora([ATTN_Q], 2, 2.0)], [], [])
    out = tmp_path / "merged.safetensors"
    report = merge_into_checkpoint(base_file, inputs, out, MergeConfig(drop_ema=True))
    merged, _ = _read(out)
    assert merged[ATTN_Q].dtype == torch.float16
    assert not any(k.startswith("model_ema.") for k in merged)
    assert any("EMA" in n for n in report.notes)
    merge_into_checkpoint(base_file, inputs, tmp_path / "with_ema.safetensors", MergeConfig())
    assert "model_ema.decay" in _read(tmp_path / "with_ema.safetensors")[0]
    with pytest.raises(LoraError, match="overwrite the base"):
        merge_into_checkpoint(base_file, inputs, base_file, MergeConfig())


def test_lora_for_another_family_is_refused(tmp_path):
    base_file = save(tmp_path / "base.safetensors", tiny_sd1())
    sdxl_lora = {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_up.weight": torch.ones(4, 1),
                 "lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q.lora_down.weight": torch.ones(1, 4)}
    with pytest.raises(NetworkFileError, match="shape|family"):
        merge_into_checkpoint(base_file, load_lora_inputs([sdxl_lora], [], []), tmp_path / "o.safetensors",
                              MergeConfig())


def test_block_weights_scale_the_right_blocks(tmp_path):
    assert block_of(_key(ATTN_Q)) == "IN01" and block_of(_key(ATTN_K2)) == "OUT03"
    assert block_of(_key(PROJ_IN)) == "MID" and block_of(_key(CONV3)) == "IN04" and block_of(_key(TE_Q)) == "BASE"
    base = tiny_sd1()
    lora = make_lora(TARGETS, rank=2, alpha=2.0)
    only_in01 = ",".join(["0", "1"] + ["0"] * 15)          # 17 values: BASE, IN01, IN02, ...
    out = tmp_path / "m.safetensors"
    merge_into_checkpoint(base, load_lora_inputs([lora], [1.0], [only_in01]), out, MergeConfig(precision="fp32"))
    merged, _ = _read(out)
    assert not torch.equal(merged[ATTN_Q], base[ATTN_Q])
    for name in (ATTN_K2, PROJ_IN, TE_Q, CONV3):              # OUT03, MID, BASE and IN04 all have weight 0
        assert torch.equal(merged[name], base[name]), name
    values = ["1"] * 26
    values[BLOCK_NAMES[26].index("OUT03")] = "0.5"
    weights = parse_block_weights(",".join(values))
    assert weights["OUT03"] == 0.5 and weights["IN04"] == 1.0
    merge_into_checkpoint(base, load_lora_inputs([lora], [2.0], [",".join(values)]), out,
                          MergeConfig(precision="fp32"))
    half = _read(out)[0]
    fresh = tiny_sd1()
    assert all(torch.equal(v, fresh[k]) for k, v in base.items())   # a live state dict is never written to
    expected = base[ATTN_K2] + 2.0 * 0.5 * lora_product(lora, _key(ATTN_K2))
    assert torch.allclose(half[ATTN_K2], expected, atol=1e-6)
    with pytest.raises(LoraError, match="17 or 26"):
        parse_block_weights("1,2,3")


def test_concat_merge_is_exact_and_svd_merge_reports_its_loss():
    one, two = make_lora(TARGETS, 2, 1.0, seed=1), make_lora(TARGETS, 3, 6.0, seed=2)
    inputs = load_lora_inputs([one, two], [0.5, -1.5], [])
    merged, report = merge_loras(inputs, MergeConfig(mode="concat", precision="fp32"), "sd1")
    for name in TARGETS:
        key = _key(name)
        expected = 0.5 * lora_product(one, key) - 1.5 * lora_product(two, key)
        assert rel(lora_product(merged, key), expected) < 1e-6
        assert merged[f"{key}.lora_down.weight"].shape[0] == 5
    assert report.overall_relative_error() < 1e-6
    full, full_report = merge_loras(inputs, MergeConfig(mode="svd", svd_dim=5, precision="fp32"), "sd1")
    assert full_report.overall_relative_error() < 1e-5
    small, small_report = merge_loras(inputs, MergeConfig(mode="svd", svd_dim=1, precision="fp32"), "sd1")
    assert small_report.overall_relative_error() > 0.05
    key = _key(ATTN_Q)
    row = next(r for r in small_report.layers if r.layer == key)
    expected = 0.5 * lora_product(one, key) - 1.5 * lora_product(two, key)
    assert row.relative_error == pytest.approx(rel(lora_product(small, key), expected), rel=1e-3)


def test_loha_merges_through_its_own_formula_and_cannot_be_concatenated(tmp_path):
    g = torch.Generator().manual_seed(5)
    key = _key(ATTN_Q)
    loha = {f"{key}.hada_w1_a": torch.randn(8, 2, generator=g), f"{key}.hada_w1_b": torch.randn(2, 8, generator=g),
            f"{key}.hada_w2_a": torch.randn(8, 2, generator=g), f"{key}.hada_w2_b": torch.randn(2, 8, generator=g),
            f"{key}.alpha": torch.tensor(1.0)}
    expected = (loha[f"{key}.hada_w1_a"] @ loha[f"{key}.hada_w1_b"]) * (
        loha[f"{key}.hada_w2_a"] @ loha[f"{key}.hada_w2_b"]) * 0.5
    base = tiny_sd1()
    out = tmp_path / "m.safetensors"
    merge_into_checkpoint(base, load_lora_inputs([loha], [1.0], []), out, MergeConfig(precision="fp32"))
    assert torch.allclose(_read(out)[0][ATTN_Q], base[ATTN_Q] + expected, atol=1e-5)
    with pytest.raises(NetworkFileError, match="--mode svd --svd-dim"):
        merge_loras(load_lora_inputs([loha], [], []), MergeConfig(mode="concat"), "sd1")
    merged, report = merge_loras(load_lora_inputs([loha], [], []), MergeConfig(mode="svd", svd_dim=4,
                                                                             precision="fp32"), "sd1")
    assert rel(lora_product(merged, key), expected) < 1e-5


def test_dora_is_refused_with_a_reason():
    lora = make_lora([ATTN_Q], 2, 2.0)
    lora[f"{_key(ATTN_Q)}.dora_scale"] = torch.ones(1, 8)
    with pytest.raises(NetworkFileError, match="DoRA"):
        merge_into_checkpoint(tiny_sd1(), load_lora_inputs([lora], [], []), "/tmp/never.safetensors",
                              MergeConfig())


def test_lokr_merges_with_the_webui_scale(tmp_path):
    g = torch.Generator().manual_seed(6)
    key = _key(ATTN_Q)                                      # an 8x8 weight: kron of (2x2) and (4x4) = w2_a @ w2_b
    lokr = {f"{key}.lokr_w1": torch.randn(2, 2, generator=g), f"{key}.lokr_w2_a": torch.randn(4, 1, generator=g),
            f"{key}.lokr_w2_b": torch.randn(1, 4, generator=g), f"{key}.alpha": torch.tensor(0.5)}
    expected = torch.kron(lokr[f"{key}.lokr_w1"], lokr[f"{key}.lokr_w2_a"] @ lokr[f"{key}.lokr_w2_b"]) * 0.5
    base = tiny_sd1()
    out = tmp_path / "m.safetensors"
    merge_into_checkpoint(base, load_lora_inputs([lokr], [2.0], []), out, MergeConfig(precision="fp32"))
    assert torch.allclose(_read(out)[0][ATTN_Q], base[ATTN_Q] + 2.0 * expected, atol=1e-5)
