from __future__ import annotations

import pytest
from PIL import Image

from lib_lora.config import PrepConfig
from lib_lora.dataset.crop import focal_point, split_boxes
from lib_lora.dataset.prep import run_prep
from lib_lora.errors import DatasetError
from tests.fixtures.data.datagen import make_bad_corpus, make_dataset, noise_image, save_image, tree_hash, write_caption


def test_prep_flattens_fixes_tags_upscales_and_keeps_originals(tmp_path):
    src = tmp_path / "src"
    make_bad_corpus(src / "1_bad")
    save_image(src / "1_bad/big.jpg", noise_image(2000, 1500, seed=50))
    before = tree_hash(src)
    calls = []

    def upscaler(img, scale):
        calls.append(scale)
        return img.resize((img.width * scale, img.height * scale), Image.NEAREST)

    result = run_prep(src, tmp_path / "dst", PrepConfig(resolution=128, dedupe=False), upscaler=upscaler)
    assert tree_hash(src) == before
    out = tmp_path / "dst/1_bad"
    alpha = Image.open(out / "alpha.png")
    assert alpha.mode == "RGB" and alpha.getpixel((0, 0)) == (255, 255, 255) and alpha.size == (128, 128)
    assert (out / "alpha.txt").read_text(encoding="utf-8") == "white background, simple background, 1girl"
    assert Image.open(out / "rotated.jpg").size == (120, 240)        # EXIF applied, then 2x (short side 60)
    w, h = Image.open(out / "big.jpg").size
    assert 0.98 * 4 * 128 ** 2 <= w * h <= 4 * 128 ** 2 and abs(w / h - 4 / 3) < 0.01   # area capped
    assert calls and set(calls) == {2}
    skipped = {p.name for p, _ in result.skipped}
    assert {"corrupt.png", "zero.jpg", "bomb.png", "truncated.png", "really_text.png"} <= skipped
    assert result.flattened == 2 and not (out / "notes.pdf").exists()


def test_unchanged_images_are_copied_byte_for_byte(tmp_path):
    make_dataset(tmp_path / "s", {"3_a": 2}, size=(300, 300))
    run_prep(tmp_path / "s", tmp_path / "d", PrepConfig(resolution=256, upscale_small=False))
    assert tree_hash(tmp_path / "s") == tree_hash(tmp_path / "d")


def test_crop_modes_and_dedupe(tmp_path):
    src = tmp_path / "s"
    make_dataset(src, {"1_a": 1}, size=(400, 100))
    img = Image.new("RGB", (600, 300), (255, 255, 255))
    img.paste((200, 30, 30), (480, 100, 560, 200))                 # subject on the right
    save_image(src / "1_a/subject.png", img)
    save_image(src / "1_a/subject_copy.png", img.resize((300, 150)))
    result = run_prep(src, tmp_path / "d", PrepConfig(crop="focal", resolution=128))
    assert [p.name for p, _ in result.skipped] == ["subject_copy.png"]
    focal = Image.open(tmp_path / "d/1_a/subject.png")
    assert focal.size == (128, 128) and focal.getpixel((100, 64))[1] < 100   # the red block is in the crop
    run_prep(src, tmp_path / "split", PrepConfig(crop="split", resolution=128, dedupe=False))
    parts = sorted(p.name for p in (tmp_path / "split/1_a").glob("img_000_part*.png"))
    assert parts == ["img_000_part1.png", "img_000_part2.png", "img_000_part3.png", "img_000_part4.png",
                     "img_000_part5.png"]
    assert (tmp_path / "split/1_a/img_000_part3.txt").read_text(encoding="utf-8") == "1girl, solo"
    run_prep(src, tmp_path / "c", PrepConfig(crop="centre", resolution=64, dedupe=False))
    assert Image.open(tmp_path / "c/1_a/subject.png").size == (64, 64)


def test_focal_point_and_split_geometry():
    img = Image.new("RGB", (400, 200), (0, 0, 0))
    img.paste((255, 255, 0), (20, 80, 60, 120))
    fx, fy = focal_point(img)
    assert fx < 100 and 80 < fy < 120
    assert split_boxes(100, 150, 2.0) == [(0, 0, 100, 150)]
    boxes = split_boxes(100, 300, 2.0)
    assert boxes[0][1] == 0 and boxes[-1][3] == 300 and all(b[3] - b[1] == 100 for b in boxes)


def test_destination_rules_and_in_place(tmp_path):
    src = make_dataset(tmp_path / "s", {"1_a": 1}, size=(64, 64))
    with pytest.raises(DatasetError, match="inside"):
        run_prep(src, src / "out", PrepConfig())
    with pytest.raises(DatasetError, match="destination"):
        run_prep(src, None, PrepConfig())
    write_caption(src / "1_a/img_000.txt", "transparent background")
    rgba = noise_image(64, 64).convert("RGBA")
    rgba.putalpha(0)
    rgba.save(src / "1_a/img_000.png")
    run_prep(src, None, PrepConfig(in_place=True, resolution=64))
    assert Image.open(src / "1_a/img_000.png").mode == "RGB"
    assert (src / "1_a/img_000.txt").read_text(encoding="utf-8") == "white background, simple background"
