"""An option that was removed still loads from configs and presets written before (its value is
dropped); a key that never existed is still an error that names the known options."""
from __future__ import annotations

import pytest

from lib_lora.config import load_train_config
from lib_lora.errors import ConfigError


def test_a_config_with_the_retired_kernel_option_loads(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[training]\ncpu_attention_kernel = true\nsdpa = false\n", encoding="utf-8")
    cfg = load_train_config(path)
    assert cfg.training.sdpa is False
    assert not hasattr(cfg.training, "cpu_attention_kernel")


def test_an_unknown_option_is_still_refused(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("[training]\ncpu_attention_kernal = true\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="cpu_attention_kernal"):
        load_train_config(path)
