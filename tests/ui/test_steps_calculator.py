"""The live steps calculator shows the number of steps the trainer will run."""
from __future__ import annotations

from PIL import Image

from lib_lora.ui.tab_train import steps_text


def _concept(root, name, n, size=(64, 64)):
    folder = root / name
    folder.mkdir(parents=True)
    for i in range(n):
        Image.new("RGB", size, (i * 20, 0, 0)).save(folder / f"{i}.png")
        (folder / f"{i}.txt").write_text("tag", encoding="utf-8")


def test_steps_follow_images_repeats_epochs_and_batch(tmp_path):
    _concept(tmp_path, "5_alpha", 4)
    _concept(tmp_path, "2_beta", 3)
    # 4x5 + 3x2 = 26 draws per epoch, one bucket, batch 2 -> 13 steps per epoch
    assert steps_text(str(tmp_path), 10, 2, 1, 0).endswith(
        "7 images x repeats = 26 per epoch -> 13 steps per epoch x 10 epochs = 130 steps")
    assert "(capped at 50 by max train steps)" in steps_text(str(tmp_path), 10, 2, 1, 50)


def test_bad_folder_is_explained_not_raised(tmp_path):
    text = steps_text(str(tmp_path / "missing"), 10, 2, 1, 0)
    assert text.startswith("Steps: ") and "missing" in text
