"""End to end through the CLI: `train --set network.algo=<algo>` on the built-in tiny model writes
a file that `inspect FILE --base <the same model as a diffusers folder>` reports fully matched.

Runs in-process through lib_lora.cli.main (same code path as `python -m lib_lora`, minus
the interpreter start). Kept small: two 64 px images, 1 epoch, 2 steps.
"""
from __future__ import annotations

import re

import pytest
from PIL import Image
from safetensors import safe_open

from lib_lora.cli import main
from lib_lora.models.tiny import build_tiny_sd1, save_pipeline

# the sd-scripts network module each algorithm's file declares
NETWORK_MODULE = {"lora": "networks.lora", "locon": "networks.lora", "loha": "lycoris.kohya",
                  "lokr": "lycoris.kohya"}


@pytest.fixture(scope="module")
def dataset_and_base(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    concept = root / "dataset" / "3_shp"
    concept.mkdir(parents=True)
    for i, colour in enumerate([(200, 40, 40), (40, 40, 200)]):
        Image.new("RGB", (64, 64), colour).save(concept / f"{i}.png")
        (concept / f"{i}.txt").write_text("shp, square", encoding="utf-8")
    # `model.pretrained=tiny` is build_tiny_sd1(seed=0): the same weights and module tree
    base = save_pipeline(build_tiny_sd1(seed=0), root / "base")
    return root / "dataset", base


def _train_args(train_dir, out_dir, algo: str) -> list[str]:
    overrides = {
        "model.pretrained": "tiny", "dataset.train_dir": train_dir, "network.algo": algo,
        "network.dim": 4, "network.alpha": 2, "network.conv_dim": 2, "network.conv_alpha": 1,
        "dataset.resolution": 64, "dataset.min_bucket_reso": 64, "dataset.max_bucket_reso": 64,
        "training.epochs": 1, "training.max_train_steps": 2, "training.batch_size": 2,
        "training.optimizer": "AdamW", "training.lr_scheduler": "constant", "training.device": "cpu",
        "output.output_dir": out_dir, "output.output_name": f"e2e_{algo}",
        "output.save_state": "false", "output.tensorboard": "false",
    }
    args = ["train"]
    for key, value in overrides.items():
        args += ["--set", f"{key}={value}"]
    return args


@pytest.mark.parametrize("algo", ["lora", "locon", "loha", "lokr"])
def test_trained_file_is_fully_matched_by_inspect(tmp_path, dataset_and_base, capsys, algo):
    train_dir, base = dataset_and_base
    assert main(_train_args(train_dir, tmp_path, algo)) == 0
    files = sorted(tmp_path.glob(f"e2e_{algo}*.safetensors"))
    assert files, f"training wrote no LoRA file: {sorted(p.name for p in tmp_path.iterdir())}"
    with safe_open(str(files[-1]), "pt") as f:
        assert f.metadata()["ss_network_module"] == NETWORK_MODULE[algo]
    capsys.readouterr()

    assert main(["inspect", str(files[-1]), "--base", str(base)]) == 0
    out = capsys.readouterr().out
    matched = re.search(r"Base model: (\d+) of (\d+) modules match", out)
    assert matched and matched.group(1) == matched.group(2) and int(matched.group(1)) > 0, out
    assert "Unmatched" not in out
    # (a LoCon file lists its 3x3 conv modules as locon, its linear ones as lora)
    assert re.search(rf"Algorithm: .*\b{algo} \(\d+\)", out), out


def test_inspect_flags_a_file_for_another_model(tmp_path, capsys):
    """An SD1 file checked against an SDXL-shaped folder: unmatched modules listed, exit code 1;
    a base path that is no model: a plain error, exit code 2."""
    from lib_lora.config import NetworkConfig
    from lib_lora.models.diffusers_adapter import DiffusersModel
    from lib_lora.models.tiny import build_tiny_sdxl
    from lib_lora.networks import create_network, save_network_file

    network = create_network(DiffusersModel(build_tiny_sd1()).network_targets(True, True), NetworkConfig(dim=2))
    path = save_network_file(tmp_path / "sd1.safetensors", network.trainable_state(), {}, "fp16")
    other = save_pipeline(build_tiny_sdxl(seed=0), tmp_path / "sdxl_base")
    capsys.readouterr()
    assert main(["inspect", str(path), "--base", str(other)]) == 1
    assert "Unmatched" in capsys.readouterr().out
    assert main(["inspect", str(path), "--base", str(tmp_path / "nowhere")]) == 2
    assert "neither a diffusers folder" in capsys.readouterr().err


def test_cli_import_command_is_wired(tmp_path, dataset_and_base, capsys):
    """`import` (dataset commands) is reachable from the CLI and keeps a <repeats>_<name> folder."""
    train_dir, _ = dataset_and_base
    assert main(["import", str(train_dir / "3_shp"), "--root", str(tmp_path), "--name", "copy"]) == 0
    assert "2 images imported" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "copy" / "train" / "3_shp").glob("*.png")) == ["0.png", "1.png"]
