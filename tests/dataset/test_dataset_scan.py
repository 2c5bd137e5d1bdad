from __future__ import annotations

import random

import pytest
from PIL import Image

from lib_lora.dataset.captions import process_caption
from lib_lora.dataset.images import load_image_rgb
from lib_lora.dataset.scan import scan_dataset
from lib_lora.errors import DatasetError
from tests.fixtures.data.datagen import (exif_rotated_jpeg, make_bad_corpus, make_dataset, noise_image,
                                         save_image, tree_hash, write_caption)


def test_scan_reads_concepts_repeats_and_captions(tmp_path):
    root = make_dataset(tmp_path / "train", {"10_alice": 3, "5_bob style": 2})
    ds = scan_dataset(root)
    assert [(c.name, c.repeats, len(c.items)) for c in ds.concepts] == [("alice", 10, 3), ("bob style", 5, 2)]
    item = ds.concepts[0].items[0]
    assert item.caption == "1girl, solo" and item.size == (64, 64)
    assert item.path.name == "img_000.png" and ds.problems == []


def test_caption_encodings_are_detected(tmp_path):
    folder = tmp_path / "1_x"
    for i, enc in enumerate(["utf-8", "utf-8-sig", "utf-16", "utf-16-le"]):
        save_image(folder / f"{i}.png", noise_image(8, 8, seed=i))
        write_caption(folder / f"{i}.txt", "тег, 猫\r\nsecond line\r\n", enc)
    captions = [item.caption for item in scan_dataset(tmp_path).items]
    assert captions == ["тег, 猫, second line"] * 4


def test_missing_caption_is_empty_and_custom_extension(tmp_path):
    folder = tmp_path / "2_x"
    save_image(folder / "a.png", noise_image(8, 8))
    write_caption(folder / "a.caption", "hello")
    assert scan_dataset(tmp_path).items[0].caption == ""
    item = scan_dataset(tmp_path, caption_extension="caption").items[0]
    assert item.caption == "hello" and item.caption_path.name == "a.caption"


def test_exif_orientation_swaps_size_and_pixels(tmp_path):
    path = tmp_path / "3_r" / "r.jpg"
    path.parent.mkdir()
    path.write_bytes(exif_rotated_jpeg(120, 60, orientation=6))
    assert scan_dataset(tmp_path).items[0].size == (60, 120)
    assert load_image_rgb(path).size == (60, 120)


def test_bad_folder_names_are_findings_not_crashes(tmp_path):
    make_dataset(tmp_path, {"3_ok": 1, "noprefix": 1, "0_zero": 1})
    ds = scan_dataset(tmp_path)
    assert [c.name for c in ds.concepts] == ["ok"]
    kinds = {(i.kind, i.path.name) for i in ds.issues}
    assert ("bad_folder_name", "noprefix") in kinds and ("bad_folder_name", "0_zero") in kinds


def test_pointing_at_concept_folder_says_use_parent(tmp_path):
    make_dataset(tmp_path, {"10_alice": 2})
    with pytest.raises(DatasetError) as err:
        scan_dataset(tmp_path / "10_alice")
    assert "concept folder" in str(err.value) and str(tmp_path) in str(err.value)


def test_missing_dir_and_unprefixed_only(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_dataset(tmp_path / "nope")
    make_dataset(tmp_path / "d", {"alice": 1})
    with pytest.raises(DatasetError, match="10_alice"):
        scan_dataset(tmp_path / "d")


def test_bad_corpus_is_skipped_with_reasons_and_untouched(tmp_path):
    files = make_bad_corpus(tmp_path / "1_bad")
    before = tree_hash(tmp_path)
    ds = scan_dataset(tmp_path)
    names = {item.path.name for item in ds.items}
    assert names == {"cmyk.jpg", "gray16.png", "palette_alpha.png", "animated.gif", "rotated.jpg", "alpha.png",
                     "truncated.png"}  # truncated: header is fine, decoding fails later
    by_name = {i.path.name: i for i in ds.issues}
    assert by_name["zero.jpg"].what.startswith("Empty file")
    assert "too large" in by_name["bomb.png"].what
    assert by_name["notes.pdf"].kind == "not_an_image"
    assert by_name["corrupt.png"].kind == by_name["really_text.png"].kind == "unreadable_image"
    for item in ds.items:
        if item.path.name != "truncated.png":
            assert load_image_rgb(item.path).mode == "RGB"
    assert {i.path.name: i.caption for i in ds.items}["alpha.png"] == "transparent background, 1girl"
    assert {i.path.name: i.caption for i in ds.items}["cmyk.jpg"] == "cmyk, тест"
    assert tree_hash(tmp_path) == before and files


def test_load_rgb_flattens_alpha_on_white_and_scales_16bit(tmp_path):
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    save_image(tmp_path / "t.png", rgba)
    assert load_image_rgb(tmp_path / "t.png").getpixel((0, 0)) == (255, 255, 255)
    import numpy as np
    save_image(tmp_path / "g.png", Image.fromarray(np.full((4, 4), 65535, np.uint16), "I;16"))
    assert load_image_rgb(tmp_path / "g.png").getpixel((0, 0)) == (255, 255, 255)


def test_unicode_paths(tmp_path):
    root = make_dataset(tmp_path / "Набор данных 猫", {"4_персонаж с пробелом": 2})
    ds = scan_dataset(str(root))
    assert ds.concepts[0].name == "персонаж с пробелом" and len(ds.items) == 2


def test_process_caption_keep_shuffle_dropout():
    rng = random.Random(0)
    caption = "trig, a, b, c, d, e"
    outs = {process_caption(caption, shuffle=True, keep_tokens=1, rng=rng) for _ in range(30)}
    assert all(o.startswith("trig, ") for o in outs) and len(outs) > 1
    assert process_caption(caption, caption_dropout_rate=1.0, rng=rng) == ""
    assert process_caption(caption, keep_tokens=2, tag_dropout_rate=1.0, rng=rng) == "trig, a"
    assert process_caption("x, y ||| b, c", keep_tokens_separator="|||", tag_dropout_rate=1.0, rng=rng) == "x, y"
    assert process_caption(caption, rng=rng) == caption
    a = [process_caption(caption, True, 1, "", 0.3, 0.1, random.Random(5)) for _ in range(3)]
    b = [process_caption(caption, True, 1, "", 0.3, 0.1, random.Random(5)) for _ in range(3)]
    assert a == b
