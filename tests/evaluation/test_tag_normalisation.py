"""One tag normaliser (dataset.tags.tag_key with split_tags): the dataset report, the tag editor
and the best-epoch tag recall count the same tags in the same captions.

Oracle: the counts written by hand. 'Red_Hair', 'red hair' and 'RED HAIR' are one tag; so are
'  blue   eyes', 'Blue Eyes' and 'blue_eyes' (case, underscores and repeated spaces do not count).
"""
from __future__ import annotations

from PIL import Image

from lib_lora.dataset.report import build_report
from lib_lora.evaluation.best_epoch import common_tags, tag_recall
from lib_lora.tagging.edits import tag_counts

CAPTIONS = {"a": "Red_Hair,  blue   eyes", "b": "red hair, Blue Eyes, smile", "c": "RED HAIR,blue_eyes"}
BY_HAND = {"red hair": 3, "blue eyes": 3, "smile": 1}


def _dataset(tmp_path):
    concept = tmp_path / "1_subject"
    concept.mkdir()
    for name, caption in CAPTIONS.items():
        Image.new("RGB", (64, 64), (10, 20, 30)).save(concept / f"{name}.png")
        (concept / f"{name}.txt").write_text(caption, encoding="utf-8")
    return tmp_path


def test_report_editor_and_recall_count_the_same_tags(tmp_path):
    root = _dataset(tmp_path)
    assert dict(build_report(root).tag_frequency) == BY_HAND
    assert dict(tag_counts(root)) == BY_HAND
    # in every caption: the tags the best-epoch recall looks for in the samples
    assert common_tags(CAPTIONS.values(), common_share=1.0) == {"red hair", "blue eyes"}


def test_recall_finds_sample_tags_however_they_are_spelt():
    target = common_tags(CAPTIONS.values(), common_share=1.0)
    assert tag_recall([{"Blue_Eyes", "RED  hair"}], target) == 1.0
    assert tag_recall([{"blue eyes"}, {"smile"}], target) == 0.25
    assert common_tags(CAPTIONS.values(), common_share=1.0, skip=["Red_Hair"]) == {"blue eyes"}
