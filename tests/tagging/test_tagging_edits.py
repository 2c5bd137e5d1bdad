from __future__ import annotations

import argparse

from lib_lora.tagging import edits
from lib_lora.tagging.commands import add_tags_edit_args, run_tags_edit
from tests.fixtures.data.datagen import make_dataset, tree_hash, write_caption


def test_pure_edits():
    tags = ["trig", "long_hair", "blue hair", "sword", "weapon"]
    assert edits.remove_tags(["Long Hair", "weapon"])(tags) == ["trig", "blue hair", "sword"]
    assert edits.replace_tag("sword", "katana, weapon")(tags) == ["trig", "long_hair", "blue hair", "katana",
                                                                  "weapon"]
    assert edits.merge_tags(["blue hair", "long hair"], "long blue hair")(tags) == ["trig", "long blue hair",
                                                                                   "sword", "weapon"]
    assert edits.merge_tags(["blue hair", "red eyes"], "x")(tags) == tags     # only where all parts are present
    assert edits.move_to_front(["weapon", "sword"])(tags)[:2] == ["weapon", "sword"]
    assert edits.add_trigger("mytrig")(tags)[0] == "mytrig"
    assert edits.prune_tags(["*hair*"])(tags) == ["trig", "sword", "weapon"]


def _run(*argv) -> int:
    parser = argparse.ArgumentParser()
    add_tags_edit_args(parser)
    return run_tags_edit(parser.parse_args([str(a) for a in argv]))


def test_bulk_edit_cli_and_undo_restores_bytes(tmp_path, capsys):
    make_dataset(tmp_path, {"3_a": 3}, size=(16, 16), caption="1girl, absurdres, sword, weapon")
    write_caption(tmp_path / "3_a/img_001.txt", "1girl, rare_tag, absurdres", "utf-16")
    before = tree_hash(tmp_path)
    assert _run(tmp_path, "remove", "absurdres, highres") == 0
    assert "3 of 3 captions changed" in capsys.readouterr().out
    assert (tmp_path / "3_a/img_001.txt").read_text(encoding="utf-8") == "1girl, rare_tag"
    assert _run(tmp_path, "undo") == 0
    assert tree_hash(tmp_path) == {**before, **{k: v for k, v in tree_hash(tmp_path).items() if ".lib_lora" in k}}
    assert _run(tmp_path, "undo") == 2 and "no caption edit to undo" in capsys.readouterr().err
    assert _run(tmp_path, "prune", "--min-count", "2") == 0
    assert "rare" not in (tmp_path / "3_a/img_001.txt").read_text(encoding="utf-8")
    assert _run(tmp_path, "add-trigger", "zxc") == 0 and _run(tmp_path, "merge", "sword, weapon", "sword weapon") == 0
    assert (tmp_path / "3_a/img_000.txt").read_text(encoding="utf-8") == "zxc, 1girl, absurdres, sword weapon"
    assert _run(tmp_path, "front", "sword weapon") == 0 and _run(tmp_path, "replace", "1girl", "1boy") == 0
    assert (tmp_path / "3_a/img_000.txt").read_text(encoding="utf-8") == "sword weapon, zxc, 1boy, absurdres"
    assert _run(tmp_path, "replace", "only-one") == 2


def test_per_image_edit(tmp_path):
    make_dataset(tmp_path, {"1_a": 1}, size=(16, 16))
    edits.edit_caption(tmp_path / "1_a/img_000.png", " a,, b ,c ")
    assert (tmp_path / "1_a/img_000.txt").read_text(encoding="utf-8") == "a, b, c"
