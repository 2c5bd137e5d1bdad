"""The best-epoch hint of a run works with either signal alone and says which one it used and why.

Real files: epoch files and the per-epoch log written by the trainer, sample PNGs
named as the sampler names them, the run's TOML and captioned dataset, and a tiny WD14 ONNX
tagger whose tags follow the image colour (red -> hatsune_miku, blue -> blue_background)."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from PIL import Image
from safetensors.torch import save_file

from lib_lora.config import TrainConfig, dumps_train_config
from lib_lora.evaluation.best_epoch import RECALL, VALIDATION
from lib_lora.evaluation.run_hint import hint_for_run
from lib_lora.evaluation.samples import sample_path
from lib_lora.training.saving import record_epoch
from lib_lora.ui.render import best_epoch_html

NAME = "hintrun"
RED, BLUE = (220, 20, 20), (20, 20, 220)


def make_run(lora_dir: Path, validation: dict[int, float | None]) -> None:
    """Epoch files plus the per-epoch log, as a run leaves them (the trainer's record_epoch)."""
    lora_dir.mkdir(parents=True, exist_ok=True)
    for epoch, loss in validation.items():
        path = lora_dir / f"{NAME}-{epoch:06d}.safetensors"
        save_file({"lora_unet_x.alpha": torch.tensor(4.0)}, str(path))
        record_epoch(lora_dir, NAME, {"epoch": epoch, "step": epoch * 4, "file": str(path), "mean_loss": 0.1,
                                      "validation_loss": loss})


def make_samples(lora_dir: Path, colours: dict[int, tuple]) -> None:
    for epoch, colour in colours.items():
        path = sample_path(lora_dir / "samples", NAME, epoch, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (64, 64), colour).save(path)


def make_dataset_and_toml(tmp_path: Path, lora_dir: Path) -> None:
    concept = tmp_path / "train" / "3_lrsq"
    concept.mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (64, 64), RED).save(concept / f"{i}.png")
        (concept / f"{i}.txt").write_text("lrsq, hatsune miku, 1girl", encoding="utf-8")
    cfg = TrainConfig()
    cfg.dataset.train_dir, cfg.dataset.trigger_word, cfg.output.output_name = str(concept.parent), "lrsq", NAME
    (lora_dir / f"{NAME}.toml").write_text(dumps_train_config(cfg), encoding="utf-8")


def tiny_tagger(tmp_path: Path) -> str:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fixtures" / "data"))
    from wd14_model import build_model
    return str(build_model(tmp_path / "tagger", size=64))


def test_validation_loss_alone_picks_the_lowest_and_says_why(tmp_path):
    lora_dir = tmp_path / "Lora"
    make_run(lora_dir, {1: 0.30, 2: 0.20, 3: 0.22, 4: 0.35})
    hint = hint_for_run(lora_dir, NAME)                        # no samples, no tagger
    assert hint.best == 2 and hint.used == [VALIDATION]
    assert "Based on the validation loss only" in hint.explanation
    assert "(the lowest" in hint.explanation and "Later epochs (3, 4)" in hint.explanation
    assert "saved no sample images" in hint.unused[RECALL] and RECALL in hint.explanation

    make_samples(lora_dir, {1: RED, 2: RED})
    assert "no tagger is chosen" in hint_for_run(lora_dir, NAME).unused[RECALL]
    make_dataset_and_toml(tmp_path, lora_dir)
    broken = hint_for_run(lora_dir, NAME, tagger=str(tmp_path / "no_such_tagger"))
    assert broken.best == 2 and "could not be loaded" in broken.unused[RECALL]
    page = best_epoch_html(broken)
    assert "Recommended: epoch 2" in page and "based on validation loss" in page


def test_tag_recall_alone_picks_the_epoch_that_learned_the_subject(tmp_path):
    lora_dir = tmp_path / "Lora"
    make_run(lora_dir, {1: None, 2: None, 3: None})            # trained without validation_split
    make_dataset_and_toml(tmp_path, lora_dir)
    make_samples(lora_dir, {1: BLUE, 2: RED, 3: RED})          # the subject (red) appears from epoch 2
    hint = hint_for_run(lora_dir, NAME, tagger=tiny_tagger(tmp_path))
    assert hint.used == [RECALL] and hint.best == 2           # 2 and 3 tie: the earlier one
    recalls = {s.epoch: s.tag_recall for s in hint.scores}
    assert recalls[1] < recalls[2] == recalls[3] == 1.0
    assert "held no images out" in hint.unused[VALIDATION]
    assert "Based on the tag recall of the samples only" in hint.explanation
    assert "100% of the dataset's common tags" in hint.explanation


def test_both_signals_are_combined(tmp_path):
    lora_dir = tmp_path / "Lora"
    make_run(lora_dir, {1: 0.30, 2: 0.25, 3: 0.21})
    make_dataset_and_toml(tmp_path, lora_dir)
    make_samples(lora_dir, {1: BLUE, 2: BLUE, 3: RED})
    hint = hint_for_run(lora_dir, NAME, tagger=tiny_tagger(tmp_path))
    assert hint.used == [VALIDATION, RECALL] and hint.best == 3 and hint.unused == {}
    assert "averaged" in hint.explanation and "not used" not in hint.explanation


def test_no_signal_suggests_the_last_epoch_and_says_what_to_do(tmp_path):
    lora_dir = tmp_path / "Lora"
    make_run(lora_dir, {1: None, 2: None})
    hint = hint_for_run(lora_dir, NAME)
    assert hint.best == 2 and hint.used == []
    assert "validation_split" in hint.explanation and "sample images" in hint.explanation
