from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from lib_lora.errors import TaggerError
from lib_lora.tagging.labels import CHARACTER, read_labels
from lib_lora.tagging.model_files import resolve_model
from lib_lora.tagging.postprocess import TagFilter, caption_tags, scores_above_threshold, union_scores
from lib_lora.tagging.wd14 import Wd14Model
from lib_lora.tagging.wd14_input import wd14_input
from tests.fixtures.data.wd14_model import build_model, write_tags_csv

W = 255.0


def test_input_tensor_matches_hand_computed_values():
    img = Image.new("RGBA", (4, 2))
    img.putdata([(255, 0, 0, 255), (0, 255, 0, 255), (0, 0, 255, 255), (10, 20, 30, 0),
                 (1, 2, 3, 255), (40, 50, 60, 255), (7, 8, 9, 255), (200, 100, 0, 255)])
    x = wd14_input(img, 4)
    white = [W, W, W]
    expected = np.array([
        [white] * 4,                                                     # top padding: (4 - 2) // 2 = 1 row
        [[0, 0, W], [0, W, 0], [W, 0, 0], white],                         # BGR; transparent -> white
        [[3, 2, 1], [60, 50, 40], [9, 8, 7], [0, 100, 200]],
        [white] * 4,
    ], dtype=np.float32)
    assert x.dtype == np.float32 and x.shape == (4, 4, 3)
    np.testing.assert_array_equal(x, expected)


def test_padding_rounds_down_on_the_left_and_resize_keeps_flat_colour():
    tall = Image.new("RGB", (1, 2), (10, 20, 30))
    x = wd14_input(tall, 2)
    np.testing.assert_array_equal(x[:, 0], [[30, 20, 10]] * 2)   # (2 - 1) // 2 = 0 columns on the left
    np.testing.assert_array_equal(x[:, 1], [[W, W, W]] * 2)
    flat = wd14_input(Image.new("RGB", (10, 10), (50, 100, 150)), 448)
    assert flat.shape == (448, 448, 3) and np.all(flat == np.array([150, 100, 50], np.float32))


def test_labels_csv_and_errors(tmp_path):
    folder = build_model(tmp_path / "m")
    labels = read_labels(folder / "selected_tags.csv")
    assert labels.names[:4] == ("general", "sensitive", "questionable", "explicit")
    assert labels.indices(CHARACTER) == [8]
    (tmp_path / "bad.csv").write_text("id,tag\n1,x\n", encoding="utf-8")
    with pytest.raises(TaggerError, match="header"):
        read_labels(tmp_path / "bad.csv")


def test_session_shows_active_provider_and_reads_input_size(tmp_path):
    model = Wd14Model(resolve_model(str(build_model(tmp_path / "m", size=64))))
    assert model.active_provider == "CPUExecutionProvider" and model.input_size == 64
    red = wd14_input(Image.new("RGB", (8, 8), (255, 0, 0)), 64)[None]
    probs = model.predict(red)[0]
    assert probs[8] > 0.99 and probs[9] < 0.01   # character fires on red, blue background does not


def test_mismatched_tag_list_is_refused(tmp_path):
    folder = build_model(tmp_path / "m")
    write_tags_csv(folder / "selected_tags.csv", [("a", 0, None, None)])
    with pytest.raises(TaggerError, match="same model repo"):
        Wd14Model(resolve_model(str(folder)))


def test_postprocess_thresholds_filters_order_and_union(tmp_path):
    labels = read_labels(build_model(tmp_path / "m") / "selected_tags.csv")
    probs = np.array([.9, .1, .1, .1, .95, .5, .88, .95, .86, .35, .34], np.float32)
    flt = TagFilter(general_threshold=0.35, character_threshold=0.85, exclude_tags=("long hair",),
                    trigger_word="mytrig")
    scores = scores_above_threshold(probs, labels, flt)
    assert "general" not in scores and "twin_tails" not in scores and "blue_background" in scores  # >= threshold
    assert caption_tags(scores, flt) == ["mytrig", "hatsune miku", "1girl", "^_^", "blue background"]
    keep_all = TagFilter(remove_junk_tags=False, replace_underscores=False, character_threshold=0.9)
    tags = caption_tags(scores_above_threshold(probs, labels, keep_all), keep_all)
    assert "absurdres" in tags and "long_hair" in tags and "hatsune_miku" not in tags
    merged = union_scores([{"a": (0.4, 0), "b": (0.9, 0)}, {"a": (0.8, 0), "c": (0.5, 4)}])
    assert merged == {"a": (0.8, 0), "b": (0.9, 0), "c": (0.5, 4)}
