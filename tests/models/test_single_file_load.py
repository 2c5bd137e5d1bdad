"""Headless runs on a single-file checkpoint: the CLI loads it offline, converts it exactly, trains on it."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from lib_lora.cli import _load_model, main
from lib_lora.config import TrainConfig, dumps_train_config
from lib_lora.errors import ModelError
from lib_lora.models.diffusers_adapter import load_diffusers_model
from lib_lora.models.model_configs import materialise_config

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from training_fixtures import fast_config, write_dataset  # noqa: E402


def _cfg(pretrained: Path, config_dir: Path | None) -> TrainConfig:
    cfg = TrainConfig()
    cfg.model.pretrained = str(pretrained)
    cfg.model.config_dir = str(config_dir or "")
    return cfg


@torch.no_grad()
def test_cli_loads_a_safetensors_checkpoint_with_config_dir_and_converts_it_exactly(tiny_single_file):
    ldm = tiny_single_file.ldm
    model = _load_model(_cfg(tiny_single_file.safetensors, tiny_single_file.config_dir), "cpu")
    assert model.family == "sd1" and model.parameterization == "eps" and model.name == "tiny_sd1.safetensors"
    torch.manual_seed(0)
    x, t, context = torch.randn(2, 4, 8, 8), torch.tensor([10, 700]), torch.randn(2, 77, 32)
    ours = model.pipe.unet(x, t, encoder_hidden_states=context).sample
    theirs = ldm.model.diffusion_model(x, t, context=context)
    assert torch.allclose(ours, theirs, atol=1e-5)
    pixels = torch.rand(1, 3, 64, 64) * 2 - 1
    assert torch.allclose(model.pipe.vae.encode(pixels).latent_dist.mode(),
                          ldm.first_stage_model.encode(pixels).mode(), atol=1e-5)
    ids = model.pipe.tokenizer(["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    assert torch.allclose(model.pipe.text_encoder(ids).last_hidden_state,
                          ldm.cond_stage_model.transformer(ids).last_hidden_state, atol=1e-5)


def test_a_ckpt_loads_the_same_weights_as_the_safetensors(tiny_single_file):
    from_ckpt = load_diffusers_model(tiny_single_file.ckpt, config_dir=tiny_single_file.config_dir)
    from_st = load_diffusers_model(tiny_single_file.safetensors, config_dir=tiny_single_file.config_dir)
    for name, tensor in from_st.unet.state_dict().items():
        assert torch.equal(tensor, from_ckpt.unet.state_dict()[name]), name


def test_train_headless_on_a_single_file_writes_a_lora(tiny_single_file, tmp_path, capsys):
    cfg = fast_config(write_dataset(tmp_path / "data", n_images=2), tmp_path / "out", num_threads=1)
    cfg.model.pretrained = str(tiny_single_file.safetensors)
    cfg.model.config_dir = str(tiny_single_file.config_dir)
    config = tmp_path / "run.toml"
    config.write_text(dumps_train_config(cfg), encoding="utf-8")
    assert main(["train", "--config", str(config)]) == 0, capsys.readouterr().err
    lora = tmp_path / "out" / "t-000001.safetensors"
    with safe_open(str(lora), framework="pt") as f:
        keys, meta = list(f.keys()), f.metadata()
    assert any(k.startswith("lora_unet_") for k in keys) and any(k.startswith("lora_te_") for k in keys)
    assert meta["ss_sd_model_name"] == "tiny_sd1.safetensors" and meta["ss_base_model_version"] == "sd_v1"


def test_without_config_dir_a_non_stock_unet_is_refused_with_what_to_set(tiny_single_file, tmp_path, capsys):
    config = tmp_path / "run.toml"
    cfg = _cfg(tiny_single_file.safetensors, None)
    cfg.dataset.train_dir = str(write_dataset(tmp_path / "data", n_images=2))   # a run without one is refused first
    config.write_text(dumps_train_config(cfg), encoding="utf-8")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "ship no config for" in err and "32 base channels" in err and "model.config_dir" in err
    assert str(tiny_single_file.safetensors) in err


def test_config_dir_of_another_family_or_not_a_diffusers_folder_is_refused(tiny_single_file, tmp_path):
    with pytest.raises(ModelError, match="describes an SDXL model"):
        load_diffusers_model(tiny_single_file.safetensors, config_dir=materialise_config("sdxl_base"))
    with pytest.raises(ModelError, match="no model_index.json") as err:
        load_diffusers_model(tiny_single_file.safetensors, config_dir=tmp_path)
    assert err.value.where == str(tmp_path)


def test_config_that_does_not_fit_the_weights_is_a_model_error(tiny_single_file):
    with pytest.raises(ModelError, match="cannot be converted with the config") as err:
        load_diffusers_model(tiny_single_file.safetensors, config_dir=materialise_config("sd15"))
    assert "model.config_dir" in err.value.fix


def test_v_parameterization_makes_the_scheduler_predict_v(tiny_single_file):
    model = load_diffusers_model(tiny_single_file.safetensors, config_dir=tiny_single_file.config_dir,
                                 v_parameterization=True)
    assert model.parameterization == "v"
    assert model.pipe.scheduler.config.prediction_type == "v_prediction"
