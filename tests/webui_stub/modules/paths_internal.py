"""Stand-in of modules/paths_internal.py: folders of a WebUI install, here under a temp root."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

script_path = os.environ.get("TRAIN_LORA_STUB_ROOT") or tempfile.mkdtemp(prefix="webui_stub_")
data_path = script_path
models_path = os.path.join(data_path, "models")
extensions_dir = os.path.join(data_path, "extensions")
extensions_builtin_dir = os.path.join(script_path, "extensions-builtin")
config_states_dir = os.path.join(script_path, "config_states")
default_output_dir = os.path.join(data_path, "outputs")
sd_configs_path = os.path.join(script_path, "configs")
sd_default_config = os.path.join(sd_configs_path, "v1-inference.yaml")
sd_model_file = os.path.join(script_path, "model.ckpt")


def normalized_filepath(filepath):
    return str(Path(filepath).absolute())
