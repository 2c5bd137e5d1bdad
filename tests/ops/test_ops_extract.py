"""extract.py: a known low-rank change is recovered, the report says so, inputs are read safely."""
from __future__ import annotations

import pickle

import pytest
import torch

from lib_lora.errors import ModelError
from lib_lora.networks.keys import checkpoint_param_to_lora_key
from lib_lora.ops.config import ExtractConfig
from lib_lora.ops.extract import extract_lora
from ops_fixtures import ATTN_K2, ATTN_Q, CONV3, PROJ_IN, TE_Q, low_rank, lora_product, rel, save, tiny_sd1

CHANGED = (ATTN_Q, ATTN_K2, PROJ_IN)


def _tuned(base: dict, rank: int, params=CHANGED, size: float = 0.05) -> tuple[dict, dict]:
    tuned = {k: v.clone() for k, v in base.items()}
    deltas = {}
    for i, name in enumerate(params):
        deltas[name] = low_rank(tuple(base[name].shape), rank, seed=i, size=size)
        tuned[name] += deltas[name]
    return tuned, deltas


def _key(name: str) -> str:
    return checkpoint_param_to_lora_key(name, "sd1")


@pytest.mark.parametrize("svd", ["auto", "lowrank", "exact"])
def test_known_rank_r_change_is_recovered_and_reported(svd):
    base = tiny_sd1()
    tuned, deltas = _tuned(base, rank=3)
    tensors, report, family = extract_lora(base, tuned, ExtractConfig(dim=3, precision="fp32", svd=svd))
    assert family == "sd1"
    for name, delta in deltas.items():
        key = _key(name)
        assert rel(lora_product(tensors, key), delta.flatten(1)) < 1e-4
        assert tensors[f"{key}.lora_down.weight"].shape[1:] == delta.shape[1:]  # conv 1x1 keeps its kernel dims
        row = next(r for r in report.layers if r.layer == key)
        assert row.rank == 3 and row.relative_error < 1e-4 and row.energy_kept > 0.9999
    assert report.overall_relative_error() < 1e-4
    assert len(report.written) == len(deltas)          # unchanged layers are not written as zeros
    assert any("text encoder" in n and "skipped" in n for n in report.notes)


def test_locon_conv_rank_and_fp16_error_is_honest():
    base = tiny_sd1()
    tuned, deltas = _tuned(base, rank=2, params=(CONV3, ATTN_Q))
    no_conv, _, _ = extract_lora(base, tuned, ExtractConfig(dim=4, conv_dim=0))
    assert not any(k.startswith(_key(CONV3)) for k in no_conv)
    tensors, report, _ = extract_lora(base, tuned, ExtractConfig(dim=4, conv_dim=2))
    key = _key(CONV3)
    assert tensors[f"{key}.lora_down.weight"].shape == (2, 8, 3, 3)
    assert tensors[f"{key}.lora_up.weight"].shape == (16, 2, 1, 1)
    assert tensors[f"{key}.lora_up.weight"].dtype == torch.float16
    row = next(r for r in report.layers if r.layer == key)
    measured = rel(lora_product(tensors, key), deltas[CONV3].flatten(1))
    assert row.relative_error == pytest.approx(measured, rel=0.05, abs=1e-5)   # the report is what the file holds
    assert measured < 2e-3


def test_text_encoder_is_kept_only_when_it_changed():
    base = tiny_sd1()
    tuned, _ = _tuned(base, rank=2, params=(ATTN_Q, TE_Q), size=0.05)
    tensors, report, _ = extract_lora(base, tuned, ExtractConfig(dim=2))
    assert any(k.startswith(_key(TE_Q)) for k in tensors)
    assert any("kept" in n for n in report.notes)
    off, report_off, _ = extract_lora(base, tuned, ExtractConfig(dim=2, text_encoder="off"))
    assert not any(k.startswith("lora_te") for k in off)
    # A change below the threshold (here: fp16 rounding of the whole text encoder) is not a trained encoder.
    rounded = {k: (v.half().float() if k.startswith("cond_stage_model") and v.is_floating_point() else v)
               for k, v in tuned.items()}
    rounded[TE_Q] = base[TE_Q].half().float()
    only_rounding, report_r, _ = extract_lora(base, rounded, ExtractConfig(dim=2))
    assert not any(k.startswith("lora_te") for k in only_rounding)
    assert any("threshold 0.001 -> skipped" in n for n in report_r.notes)


def test_dynamic_rank_and_default_clamp_is_off():
    base = tiny_sd1()
    tuned, deltas = _tuned(base, rank=2, params=(ATTN_K2,))
    tensors, report, _ = extract_lora(base, tuned, ExtractConfig(dim=8, dynamic="sv_fro", dynamic_param=0.9999,
                                                                 precision="fp32"))
    assert report.written[0].rank == 2
    clamped, clamped_report, _ = extract_lora(base, tuned, ExtractConfig(dim=2, clamp_quantile=0.9))
    assert clamped_report.overall_relative_error() > 10 * report.overall_relative_error()


def test_files_and_live_state_dicts_mix(tmp_path):
    base = tiny_sd1()
    tuned, deltas = _tuned(base, rank=2)
    base_file = save(tmp_path / "base.safetensors", base)
    ckpt = tmp_path / "tuned.ckpt"
    torch.save({"state_dict": tuned}, ckpt)
    tensors, _, _ = extract_lora(base_file, ckpt, ExtractConfig(dim=2, precision="fp32"))
    assert rel(lora_product(tensors, _key(ATTN_Q)), deltas[ATTN_Q].flatten(1)) < 1e-4


class Payload:
    def __reduce__(self):
        return (print, ("this would have run",))


def test_ckpt_with_a_pickle_payload_is_refused(tmp_path):
    ckpt = tmp_path / "evil.ckpt"
    with open(ckpt, "wb") as f:
        pickle.dump({"state_dict": {"a": torch.zeros(1)}, "x": Payload()}, f)
    torch.save({"state_dict": {"x": Payload()}}, tmp_path / "evil2.ckpt")
    for path in (ckpt, tmp_path / "evil2.ckpt"):
        with pytest.raises(ModelError, match="refused") as err:
            extract_lora(path, tiny_sd1(), ExtractConfig())
        assert str(path) in str(err.value) and "safetensors" in str(err.value)


def test_mismatched_pairs_say_what_to_do(tmp_path):
    base = tiny_sd1()
    sdxl_like = {"conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight": torch.zeros(6, 2)}
    with pytest.raises(ModelError, match="same family"):
        extract_lora(base, sdxl_like, ExtractConfig())
    wrong = dict(base)
    wrong[ATTN_Q] = torch.zeros(4, 4)
    with pytest.raises(ModelError, match="trained from"):
        extract_lora(base, wrong, ExtractConfig())
    with pytest.raises(ModelError, match="not found"):
        extract_lora(tmp_path / "missing.safetensors", base, ExtractConfig())
