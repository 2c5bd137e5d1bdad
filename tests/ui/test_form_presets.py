"""The form binds every TrainConfig field by name and round-trips; presets and foreign imports."""
from __future__ import annotations

import json

import pytest

from lib_lora import options, presets
from lib_lora.config import TrainConfig
from lib_lora.errors import LoraError
from lib_lora.ui import form


def _changed_config() -> TrainConfig:
    """A config where every field differs from its default, within its allowed values."""
    cfg = TrainConfig()
    for spec in form.field_specs(TrainConfig, "standalone"):
        section, key = spec.name.split(".")
        value = getattr(getattr(cfg, section), key)
        meta = spec.meta
        if meta.get("choices"):
            new = [c for c in meta["choices"] if c != value][0]
        elif spec.typ is bool:
            new = not value
        elif spec.typ is int:
            new = value + 1 if meta.get("max") is None or value + 1 <= meta["max"] else value - 1
        elif spec.typ is float:
            new = value / 2 if value else 0.25
        elif spec.is_list:
            new = ["a, b prompt", "second"] if "prompts" in key else [0.5, 0.75]
        else:
            new = f"{key} ünï"
        setattr(getattr(cfg, section), key, new)
    return cfg


def test_every_field_round_trips_through_the_form():
    specs = form.field_specs(TrainConfig, "standalone")
    assert {s.name for s in specs} == set(options.flatten(TrainConfig()))
    cfg = _changed_config()
    cfg.dataset.max_bucket_reso, cfg.dataset.resolution = 2048, 768   # cross-field rules still hold
    cfg.output.output_name = "name_ünï"
    cfg.network.train_unet = True
    values = form.values_from_config(cfg, specs)
    back = form.config_from_values(TrainConfig, specs, values)
    assert options.flatten(back) == options.flatten(cfg)
    assert len({s.elem_id() for s in specs}) == len(specs)
    assert all(s.elem_id().startswith("train_lora_") for s in specs)


def test_bad_form_value_names_the_field():
    specs = form.field_specs(TrainConfig, "standalone")
    values = form.values_from_config(TrainConfig(), specs)
    values[[s.name for s in specs].index("network.dim")] = "lots"
    with pytest.raises(LoraError, match="network.dim"):
        form.config_from_values(TrainConfig, specs, values)


def test_saved_form_with_stale_keys_falls_back():
    specs = form.field_specs(TrainConfig, "standalone")
    values = form.values_from_flat({"network.dim": 64, "gone.option": 1, "training.epochs": "x"}, specs,
                                   TrainConfig())
    by_name = dict(zip([s.name for s in specs], values))
    assert by_name["network.dim"] == 64 and by_name["training.epochs"] == 10


@pytest.mark.parametrize("name", list(presets.PRESETS))
def test_presets_follow_domain_defaults(name):
    cfg = TrainConfig()
    cfg.dataset.train_dir = "/data/x"
    out = presets.apply_preset(cfg, name)
    assert out.dataset.train_dir == "/data/x"
    assert out.training.unet_lr == 1e-4 and out.training.text_encoder_lr == 5e-5
    assert out.network.algo == {"character": "lora", "style": "loha", "concept": "locon"}[name]


def test_preset_save_and_load_toml(tmp_path):
    cfg = presets.apply_preset(TrainConfig(), "style")
    cfg.sample.prompts = ["trig, smile"]
    path = presets.save_preset(cfg, tmp_path / "mine.toml")
    loaded = presets.load_preset(path)
    assert options.flatten(loaded.config) == options.flatten(cfg)


def test_sd_scripts_toml_import(tmp_path):
    path = tmp_path / "sd.toml"
    path.write_text("""
[model_arguments]
pretrained_model_name_or_path = "/m/sd15.safetensors"
[dataset_arguments]
train_data_dir = "/d/train"
resolution = "768,512"
cache_latents = true
cache_latents_to_disk = true
[training_arguments]
network_module = "lycoris.kohya"
network_args = ["algo=loha", "conv_dim=4", "conv_alpha=2"]
network_dim = 8
network_alpha = 4
learning_rate = 2e-4
optimizer_type = "Prodigy"
lr_scheduler = "cosine_with_restarts"
lr_warmup_steps = 100
max_train_epochs = 12
train_batch_size = 4
network_train_unet_only = true
save_precision = "float"
unknown_thing = 3
""", encoding="utf-8")
    imported = presets.load_preset(path)
    cfg = imported.config
    assert cfg.model.pretrained == "/m/sd15.safetensors" and cfg.dataset.train_dir == "/d/train"
    assert cfg.dataset.resolution == 768 and cfg.dataset.cache_latents == "disk"
    assert (cfg.network.algo, cfg.network.dim, cfg.network.alpha, cfg.network.conv_dim) == ("loha", 8, 4.0, 4)
    assert cfg.training.unet_lr == 2e-4 and cfg.training.optimizer == "Prodigy"
    assert cfg.training.lr_warmup == 100.0 and cfg.training.epochs == 12 and cfg.training.batch_size == 4
    assert cfg.network.train_text_encoder is False and cfg.output.save_precision == "fp32"
    assert "unknown_thing" in imported.ignored


def test_kohya_gui_json_import(tmp_path):
    path = tmp_path / "preset.json"
    path.write_text(json.dumps({
        "LoRA_type": "LyCORIS/LoCon", "network_dim": 32, "network_alpha": 16, "conv_dim": 8, "conv_alpha": 4,
        "epoch": 6, "train_batch_size": 2, "learning_rate": 0.0001, "unet_lr": 0.0001, "text_encoder_lr": 5e-05,
        "optimizer": "AdamW8bit", "lr_scheduler": "cosine", "lr_warmup": 10, "max_resolution": "512,512",
        "clip_skip": 2, "max_token_length": "150", "seed": "1234", "mixed_precision": "bf16",
        "xformers": "sdpa", "shuffle_caption": True, "keep_tokens": "1", "noise_offset": 0.1,
        "min_snr_gamma": 5, "output_name": "mychar", "use_wandb": True}), encoding="utf-8")
    imported = presets.load_preset(path)
    cfg = imported.config
    assert (cfg.network.algo, cfg.network.dim, cfg.network.conv_dim) == ("locon", 32, 8)
    assert cfg.training.epochs == 6 and cfg.training.lr_warmup == pytest.approx(0.1)
    assert cfg.model.clip_skip == 2 and cfg.dataset.max_token_length == 150 and cfg.training.seed == 1234
    assert cfg.training.mixed_precision == "bf16" and cfg.output.output_name == "mychar"
    assert "use_wandb" in imported.ignored and "not imported" in imported.summary()


def test_unreadable_preset_says_what_to_do(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{nope", encoding="utf-8")
    with pytest.raises(LoraError, match="kohya_ss"):
        presets.load_preset(bad)


def test_grid_prompts_keep_their_commas():
    """The Evaluate form edits SampleConfig on its own: its prompts are one per line, like the Train form's."""
    from lib_lora.config import SampleConfig
    specs = [s for s in form.field_specs(SampleConfig, "standalone") if s.name == "prompts"]
    cfg = form.config_from_values(SampleConfig, specs, ["lrsq, smile\nlrsq, hat\n"])
    assert cfg.prompts == ["lrsq, smile", "lrsq, hat"]
    assert form.values_from_config(cfg, specs) == ["lrsq, smile\nlrsq, hat"]
