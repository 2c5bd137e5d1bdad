from __future__ import annotations

import pytest
from PIL import Image

from lib_lora.config import PrepConfig
from lib_lora.dataset.crop import focal_point, split_boxes
from lib_lora.dataset.prep import run_prep
from lib_lora.errors import ConfigError, DatasetError
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


def test_clashing_names_get_unique_outputs_and_are_reported(tmp_path, capsys):
    src = tmp_path / "s" / "2_a"
    save_image(src / "a.png", Image.new("RGB", (64, 64), (255, 0, 0)))
    save_image(src / "a.gif", Image.new("RGB", (64, 64), (0, 255, 0)).convert("P"))   # upscaled: becomes PNG
    save_image(src / "A.webp", Image.new("RGB", (64, 64), (0, 0, 255)))               # same stem, case aside
    save_image(src / "b.jpeg", noise_image(80, 64, seed=4))
    save_image(src / "b.jpg", noise_image(64, 80, seed=5))
    write_caption(src / "a.txt", "shared caption")
    before = tree_hash(tmp_path / "s")
    result = run_prep(tmp_path / "s", tmp_path / "d", PrepConfig(resolution=128, dedupe=False))
    out = tmp_path / "d" / "2_a"
    stems = [p.stem.casefold() for p in out.iterdir() if p.suffix != ".txt"]
    assert len(stems) == 5 and len(set(stems)) == 5
    centre = lambda name: Image.open(out / name).convert("RGB").getpixel((64, 64))  # noqa: E731
    assert centre("a.png") == (255, 0, 0) and centre("a_gif.png") == (0, 255, 0)   # a.png keeps its name
    assert centre("A_webp.png")[2] > 250
    assert (out / "a_gif.txt").read_text(encoding="utf-8") == "shared caption"      # each output has its caption
    assert {(s.name, o.name) for s, o in result.renamed} == {("a.gif", "a_gif.png"), ("A.webp", "A_webp.png"),
                                                              ("b.jpeg", "b_jpeg.jpg")}
    assert tree_hash(tmp_path / "s") == before

    import argparse

    from lib_lora.dataset.commands import add_prep_args, run_prep as cli_prep
    parser = argparse.ArgumentParser()
    add_prep_args(parser)
    assert cli_prep(parser.parse_args([str(tmp_path / "s"), str(tmp_path / "d2"), "--no-dedupe"])) == 0
    printed = capsys.readouterr().out
    assert "3 outputs renamed" in printed and "a.gif -> a_gif.png" in printed


def test_upscaler_other_than_lanczos_needs_the_webui(tmp_path, capsys):
    src = make_dataset(tmp_path / "s", {"1_a": 1}, size=(40, 40))
    with pytest.raises(ConfigError, match="lanczos"):
        run_prep(src, tmp_path / "d", PrepConfig(resolution=64, upscaler="R-ESRGAN 4x+"))
    assert not (tmp_path / "d").exists()
    run_prep(src, tmp_path / "d", PrepConfig(resolution=64, upscaler="Lanczos"))
    assert Image.open(tmp_path / "d/1_a/img_000.png").size == (64, 64)

    import argparse

    from lib_lora.dataset.commands import add_prep_args, run_prep as cli_prep
    parser = argparse.ArgumentParser()
    add_prep_args(parser)
    assert cli_prep(parser.parse_args([str(src), str(tmp_path / "d3"), "--upscaler", "SwinIR 4x"])) == 2
    err = capsys.readouterr().err
    assert "prep.upscaler" in err and "'SwinIR 4x'" in err and "outside the WebUI" in err
