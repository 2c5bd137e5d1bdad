"""A dataset under a Cyrillic path through import, report, prep, tag and a short training run, via the CLI."""
from __future__ import annotations

import argparse
import json

from lib_lora.cli import main
from lib_lora.config import TrainConfig, dumps_train_config
from lib_lora.dataset.commands import (add_check_args, add_import_args, add_prep_args, run_check, run_import,
                                       run_prep)
from lib_lora.dataset.scan import scan_dataset
from lib_lora.tagging.commands import add_tag_args, run_tag
from tests.fixtures.data.datagen import make_bad_corpus, make_dataset, tree_hash
from tests.fixtures.data.wd14_model import build_model


def _call(add, run, *argv) -> int:
    parser = argparse.ArgumentParser()
    add(parser)
    return run(parser.parse_args([str(a) for a in argv]))


def test_cyrillic_dataset_through_every_command(tmp_path, capsys):
    originals = make_dataset(tmp_path / "Мои картинки", {"8_Алиса": 4}, size=(200, 300), caption=None)
    make_bad_corpus(originals / "8_Алиса")
    before = tree_hash(originals)
    root = tmp_path / "наборы"
    assert _call(add_import_args, run_import, originals, "--root", root, "--name", "Алиса v1") == 0
    train = root / "Алиса v1" / "train"
    assert "imported" in capsys.readouterr().out
    assert _call(add_check_args, run_check, train, "--json", "--trigger-word", "алиса") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["images"] >= 4 and any(f["code"] == "no_captions" or f["code"] == "missing_caption"
                                         for f in report["findings"])
    prepped = tmp_path / "подготовлено"
    assert _call(add_prep_args, run_prep, train, prepped, "--resolution", "256") == 0
    model = build_model(tmp_path / "модель")
    assert _call(add_tag_args, run_tag, prepped, "--models", model, "--trigger-word", "алиса",
                 "--write-mode", "append") == 0
    assert "running on CPUExecutionProvider" in capsys.readouterr().out
    items = scan_dataset(prepped).items
    assert items and all(item.caption.startswith("алиса, ") for item in items)
    assert _call(add_check_args, run_check, prepped, "--trigger-word", "алиса") == 0
    assert "trigger word" not in capsys.readouterr().out
    _train_briefly(prepped, tmp_path / "лоры", tmp_path / "настройки.toml", capsys)
    assert tree_hash(originals) == before


def _train_briefly(train_dir, out_dir, config_path, capsys) -> None:
    """One epoch of the tiny built-in model on the tagged copies, from a TOML under a Cyrillic path."""
    cfg = TrainConfig()
    cfg.dataset.train_dir, cfg.dataset.trigger_word = str(train_dir), "алиса"
    cfg.dataset.resolution, cfg.dataset.min_bucket_reso, cfg.dataset.max_bucket_reso = 64, 64, 128
    cfg.network.dim, cfg.network.alpha = 4, 4.0
    t = cfg.training
    t.epochs, t.batch_size, t.max_train_steps, t.optimizer, t.mixed_precision = 1, 2, 3, "AdamW", "no"
    cfg.output.output_dir, cfg.output.output_name, cfg.output.tensorboard = str(out_dir), "алиса", False
    config_path.write_text(dumps_train_config(cfg), encoding="utf-8")
    assert main(["train", "--config", str(config_path)]) == 0
    assert "алиса" in capsys.readouterr().out
    from safetensors import safe_open
    [lora] = out_dir.glob("алиса*.safetensors")
    with safe_open(str(lora), "pt") as f:
        assert any(k.startswith("lora_unet_") for k in f.keys())
        frequency = json.loads(f.metadata()["ss_tag_frequency"])
    assert frequency["8_Алиса"]["алиса"] >= 4          # the Cyrillic folder and trigger word as sd-scripts records them


def test_check_on_missing_folder_is_one_line_error(tmp_path, capsys):
    assert _call(add_check_args, run_check, tmp_path / "нет") == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "does not exist" in err and len(err.strip().splitlines()) == 1


def test_tag_offline_is_clear(tmp_path, capsys):
    make_dataset(tmp_path / "d", {"1_a": 1}, size=(16, 16))
    assert _call(add_tag_args, run_tag, tmp_path / "d", "--models-dir", tmp_path / "m") == 2
    err = capsys.readouterr().err
    assert "SmilingWolf/wd-v1-4-convnext-tagger-v2" in err and "selected_tags.csv" in err
