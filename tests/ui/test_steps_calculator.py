"""The live steps calculator shows the number of steps the trainer will run, from the whole form."""
from __future__ import annotations

from PIL import Image

from lib_lora.config import TrainConfig
from lib_lora.ui.tab_train import steps_text


def _concept(root, name, n, size=(64, 64)):
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (i * 20, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("tag", encoding="utf-8")


def _cfg(train_dir, epochs=10, batch=2, accumulation=1, max_steps=0):
    cfg = TrainConfig()
    cfg.dataset.train_dir = str(train_dir)
    t = cfg.training
    t.epochs, t.batch_size, t.gradient_accumulation_steps, t.max_train_steps = epochs, batch, accumulation, max_steps
    return cfg


def test_steps_follow_images_repeats_epochs_and_batch(tmp_path):
    _concept(tmp_path, "5_alpha", 4)
    _concept(tmp_path, "2_beta", 3)
    # 4x5 + 3x2 = 26 draws per epoch, one bucket, batch 2 -> 13 steps per epoch
    assert steps_text(_cfg(tmp_path)).endswith(
        "7 images x repeats = 26 per epoch -> 13 steps per epoch x 10 epochs = 130 steps")
    assert "(capped at 50 by max train steps)" in steps_text(_cfg(tmp_path, max_steps=50))


def test_regularization_images_and_buckets_count_as_the_trainer_counts(tmp_path):
    train, reg = tmp_path / "train", tmp_path / "reg"
    _concept(train, "2_alpha", 3, size=(64, 64))       # square bucket: 6 draws
    _concept(train, "1_beta", 3, size=(96, 48))        # a wide bucket: 3 draws
    _concept(reg, "1_person", 9)                       # as many reg draws as train draws
    cfg = _cfg(train, epochs=1, batch=2)
    cfg.dataset.resolution, cfg.dataset.min_bucket_reso, cfg.dataset.bucket_reso_steps = 64, 32, 8
    # train only: square 6 draws -> 3 batches, wide 3 draws -> 2 batches = 5 steps
    assert "-> 5 steps per epoch" in steps_text(cfg)
    cfg.dataset.reg_dir = str(reg)
    # with regularization (sd-scripts' rule) as many reg draws as train draws (9), in the reg images' own
    # (square) bucket: square 6 + 9 = 15 draws -> 8 batches, wide 3 draws -> 2 batches = 10 steps
    assert "-> 10 steps per epoch" in steps_text(cfg)


def test_bad_folder_is_explained_not_raised(tmp_path):
    text = steps_text(_cfg(tmp_path / "missing"))
    assert text.startswith("Steps: ") and "missing" in text


def test_the_dataset_tabs_report_counts_with_the_train_form(tmp_path):
    """The Dataset tab's report and the Train tab's calculator show the same steps for the same form."""
    from lib_lora.ui.tab_dataset import dataset_report
    train, reg = tmp_path / "train", tmp_path / "reg"
    _concept(train, "2_alpha", 3, size=(64, 64))
    _concept(train, "1_beta", 3, size=(96, 48))
    _concept(reg, "1_person", 9)
    cfg = _cfg(train, epochs=3, batch=2)
    cfg.dataset.resolution, cfg.dataset.min_bucket_reso, cfg.dataset.bucket_reso_steps = 64, 32, 8
    cfg.dataset.reg_dir = str(reg)
    report = dataset_report(str(train), "character", 99, 99, run=cfg)
    assert (report["steps_per_epoch"], report["total_steps"]) == (10, 30)
    assert "-> 10 steps per epoch x 3 epochs = 30 steps" in steps_text(cfg)
