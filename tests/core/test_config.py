"""Typed config: defaults valid, TOML round trip, --set overrides, errors that name field, value and range."""
from __future__ import annotations

import pytest

from lib_lora import options
from lib_lora.config import TrainConfig, dumps_train_config, load_train_config
from lib_lora.errors import ConfigError, LoraError


def test_defaults_follow_domain_practice_and_validate():
    cfg = TrainConfig()
    options.validate(cfg)
    assert (cfg.training.unet_lr, cfg.training.text_encoder_lr) == (1e-4, 5e-5)
    assert cfg.training.optimizer == "AdamW8bit" and cfg.training.lr_scheduler == "cosine"
    assert cfg.dataset.shuffle_caption and cfg.dataset.keep_tokens == 1
    assert cfg.output.save_precision == "fp16" and cfg.sample.grid_weights == [0.6, 0.7, 0.8, 0.9, 1.0]


def test_every_option_has_help_text():
    for path, (_, meta) in options.field_info(TrainConfig).items():
        assert meta["help"].strip(), path


def test_toml_round_trip_keeps_every_value(tmp_path):
    cfg = TrainConfig()
    cfg.network.algo, cfg.network.dim = "loha", 12
    cfg.sample.prompts = ['lrsq, "quoted" smile', "ünïcode, Кириллица"]
    cfg.dataset.train_dir = str(tmp_path / "данные с пробелом")
    path = tmp_path / "run.toml"
    path.write_text(dumps_train_config(cfg), encoding="utf-8")
    assert load_train_config(path) == cfg


def test_set_overrides_convert_types():
    cfg = options.apply_overrides(TrainConfig, TrainConfig(),
                                  ["network.dim=32", "training.unet_lr=2e-4", "dataset.flip_aug=true",
                                   "sample.grid_weights=0.5,1.0"])
    assert cfg.network.dim == 32 and cfg.training.unet_lr == 2e-4 and cfg.dataset.flip_aug is True
    assert cfg.sample.grid_weights == [0.5, 1.0]


@pytest.mark.parametrize("override, field, needle", [
    ("network.dim=0", "network.dim", "from 1 to 1024"),
    ("network.algo=dora", "network.algo", "'lora'"),
    ("training.optimizer=Adam", "training.optimizer", "'AdamW8bit'"),
    ("dataset.max_token_length=100", "dataset.max_token_length", "75"),
    ("network.dim=sixteen", "network.dim", "int"),
    ("network.nope=1", "network.nope", "known options"),
])
def test_bad_values_name_field_value_and_range(override, field, needle):
    with pytest.raises(ConfigError) as err:
        options.apply_overrides(TrainConfig, TrainConfig(), [override])
    assert err.value.field == field
    assert needle in str(err.value) and override.split("=")[1] in str(err.value)


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="dataset.min_bucket_reso"):
        options.apply_overrides(TrainConfig, TrainConfig(), ["dataset.min_bucket_reso=2048"])
    with pytest.raises(ConfigError, match="output.output_name"):
        options.apply_overrides(TrainConfig, TrainConfig(), ["output.output_name=a/b"])


def test_broken_toml_and_missing_file_are_plain_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[network\ndim = 3", encoding="utf-8")
    with pytest.raises(LoraError, match="cannot be read"):
        load_train_config(bad)
    with pytest.raises(LoraError, match="Cannot read the config file"):
        load_train_config(tmp_path / "missing.toml")
