from __future__ import annotations

import json
import shutil

from lib_lora.dataset.phash import near_duplicate_groups, phash
from lib_lora.dataset.report import ReportOptions, build_report
from lib_lora.dataset.report_text import format_report
from lib_lora.dataset.tagstats import caption_tag_sets, strongest_pairs
from tests.fixtures.data.datagen import make_bad_corpus, make_dataset, noise_image, tree_hash, write_caption


def _codes(report):
    return {(f.code, f.concept) for f in report.findings}


def test_report_on_bad_corpus_names_every_problem_and_touches_nothing(tmp_path):
    make_dataset(tmp_path, {"10_alice": 4}, size=(600, 600))
    make_bad_corpus(tmp_path / "1_bad")
    (tmp_path / "no_repeats").mkdir()
    before = tree_hash(tmp_path)
    report = build_report(tmp_path, ReportOptions(trigger_word="alice"))
    codes = {c for c, _ in _codes(report)}
    assert {"bad_folder_name", "unreadable_image", "not_an_image", "undecodable", "transparency", "animated",
            "colour_mode", "missing_caption", "trigger_missing", "few_images", "imbalance", "few_steps",
            "too_small"} <= codes
    paths = {p for f in report.findings for p in f.paths}
    for name in ("corrupt.png", "zero.jpg", "bomb.png", "really_text.png", "truncated.png", "notes.pdf"):
        assert any(p.endswith(name) for p in paths), name
    assert tree_hash(tmp_path) == before
    assert json.loads(json.dumps(report.to_dict()))["severity_counts"]["error"] >= 5
    assert "training is never blocked" in format_report(report)


def test_duplicates_junk_trigger_and_associations(tmp_path):
    make_dataset(tmp_path, {"5_x": 6}, size=(512, 512), caption="trig, 1girl, sword, weapon, absurdres")
    shutil.copy(tmp_path / "5_x/img_000.png", tmp_path / "5_x/copy.png")
    noise_image(520, 515, seed=2).save(tmp_path / "5_x/near.jpg", quality=85)
    write_caption(tmp_path / "5_x/copy.txt", "1girl, trig")
    write_caption(tmp_path / "5_x/near.txt", "")
    report = build_report(tmp_path, ReportOptions(trigger_word="trig", kind="style"))
    by_code = {f.code: f for f in report.findings}
    assert by_code["exact_duplicate"].count == 2
    assert any(p.endswith("near.jpg") for p in by_code["near_duplicate"].paths)
    assert "absurdres" in by_code["junk_tags"].what and by_code["empty_caption"].count == 1
    assert by_code["trigger_not_first"].count == 1 and by_code["trigger_missing"].count == 1
    assert "sword + weapon" in by_code["associations"].what
    assert ("1girl", 7) in report.tag_frequency[:2]


def test_balance_steps_and_buckets(tmp_path):
    make_dataset(tmp_path, {"2_rare": 5, "10_main": 20}, size=(96, 64))
    report = build_report(tmp_path, ReportOptions(kind="character", epochs=10, batch_size=2))
    shares = {s.name: s for s in report.concepts}
    assert shares["rare"].suggested_repeats == 40 and shares["main"].suggested_repeats == 10
    assert report.total_steps == (5 * 2 + 20 * 10) // 2 * 10
    assert report.buckets == [{"width": 640, "height": 384, "images": 25}]
    assert "2_rare -> 40_rare" in {f.code: f for f in report.findings}["imbalance"].fix


def test_phash_separates_different_and_joins_resized():
    a, b = noise_image(200, 200, seed=1), noise_image(200, 200, seed=2)
    hashes = [phash(a), phash(b), phash(a.resize((150, 150))), phash(a.convert("L"))]
    assert near_duplicate_groups(hashes) == [[0, 2, 3]]


def test_strongest_pairs_skip_ubiquitous():
    sets = caption_tag_sets(["1girl, rain, umbrella"] * 4 + ["1girl, smile", "1girl, rain"])
    pairs = strongest_pairs(sets)
    assert (pairs[0].a, pairs[0].b, pairs[0].together) == ("rain", "umbrella", 4)
    assert all("1girl" not in (p.a, p.b) for p in pairs)


def _images(folder, sizes):
    from PIL import Image
    folder.mkdir(parents=True)
    for i, size in enumerate(sizes):
        Image.new("RGB", size, (40 * i, 90, 0)).save(folder / f"{i:02d}.png")
        write_caption(folder / f"{i:02d}.txt", "thing")


def test_steps_are_counted_bucket_by_bucket_with_reg_images_and_accumulation(tmp_path):
    """Counted by hand: buckets at 64 px (sides 32..128, steps of 32) are 64x64, 96x32 and 128x32 here.
    Training draws: 3_a 3x64x64 + 2x96x32 -> 9 + 6; 2_b 3x128x32 -> 6: 21 draws.
    Regularization 2_reg (r00 64x64, r01 96x32) draws r00 r00 r01 r01, cycled to 21: 5 full cycles + r00.
    Per bucket: 64x64 9+11 = 20, 96x32 6+10 = 16, 128x32 6 -> batches of 4: 5 + 4 + 2 = 11 -> accumulation 3: 4."""
    data, reg = tmp_path / "data", tmp_path / "reg"
    _images(data / "3_a", [(64, 64)] * 3 + [(96, 32)] * 2)
    _images(data / "2_b", [(128, 32)] * 3)
    _images(reg / "2_reg", [(64, 64), (96, 32)])
    options = ReportOptions(resolution=64, min_bucket_reso=32, max_bucket_reso=128, bucket_reso_steps=32,
                            epochs=3, batch_size=4, gradient_accumulation_steps=3, reg_dir=str(reg))
    report = build_report(data, options)
    assert (report.steps_per_epoch, report.total_steps) == (4, 12)
    assert "12 (4 per epoch" in format_report(report)
    assert build_report(data, ReportOptions(**{**options.__dict__, "max_train_steps": 10})).total_steps == 10
    # without the regularization images: 9/4 -> 3, 6/4 -> 2, 6/4 -> 2 = 7 batches -> 3 steps
    assert build_report(data, ReportOptions(**{**options.__dict__, "reg_dir": ""})).steps_per_epoch == 3
