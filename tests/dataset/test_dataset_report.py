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
