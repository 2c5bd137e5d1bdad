"""Grid layout (rows, columns, labels, seeds), best-epoch hint, loss chart."""
from __future__ import annotations

from pathlib import Path

import pytest
from PIL import Image

from lib_lora.errors import LoraError
from lib_lora.evaluation.best_epoch import best_epoch_hint, common_tags, tag_recall
from lib_lora.evaluation.epoch_grid import (GridSpec, compose_grid, epoch_files, render_grid_cells, run_names)
from lib_lora.ui.render import loss_chart


def test_grid_has_baseline_plus_epochs_by_prompts_times_weights(tmp_path):
    for e in (1, 2, 3):
        (tmp_path / f"run-{e:06d}.safetensors").write_bytes(b"x")
    (tmp_path / "run.safetensors").write_bytes(b"x")
    (tmp_path / "other-000001.safetensors").write_bytes(b"x")
    files = epoch_files(tmp_path, "run")            # the phantom run.safetensors is not an epoch
    assert [p.name for p in files] == ["run-000001.safetensors", "run-000002.safetensors", "run-000003.safetensors"]
    assert set(run_names(tmp_path)) == {"run", "other"}
    calls = []

    def render(prompt, path, weight, seed):
        calls.append((prompt, path and Path(path).stem, weight, seed))
        return Image.new("RGB", (16, 16), (int(weight * 200), 0, 0))

    spec = GridSpec(files, ["trig, smile", "trig"], [0.6, 1.0], seed=7)
    cells = render_grid_cells(spec, render)
    assert len(cells) == 4 and all(len(row) == 4 for row in cells)           # 2 prompts x 2 weights; 1 + 3
    assert spec.column_labels() == ["no LoRA", "epoch 1", "epoch 2", "epoch 3"]
    assert spec.row_labels()[0] == "trig, smile | w 0.6" and spec.row_labels()[3] == "trig | w 1"
    assert {c[3] for c in calls} == {7}                                        # one seed everywhere
    assert sum(1 for c in calls if c[1] is None) == 2                          # baseline once per prompt
    image = compose_grid(spec, cells)
    assert image.width > 4 * 16 and image.height > 4 * 16


def test_grid_without_files_says_what_to_do():
    with pytest.raises(LoraError, match="Train at least one epoch"):
        render_grid_cells(GridSpec([], ["p"]), lambda *a: None)


def test_best_epoch_combines_validation_loss_and_recall():
    hint = best_epoch_hint([1, 2, 3, 4], {1: 0.30, 2: 0.20, 3: 0.21, 4: 0.35}, {1: 0.2, 2: 0.7, 3: 0.8, 4: 0.8})
    assert hint.best == 3
    assert "epoch 3" in hint.explanation and "validation loss" in hint.explanation
    assert [row[4] for row in hint.to_rows()].count("recommended") == 1


def test_best_epoch_without_signals_suggests_last_and_says_why():
    hint = best_epoch_hint([1, 2])
    assert hint.best == 2 and "validation_split" in hint.explanation


def test_tag_recall_against_common_caption_tags():
    captions = ["trig, red hair, smile", "trig, red_hair", "trig, red hair, hat"]
    # default share 0.3 of 3 captions: a tag in 1 caption is common; 'red_hair' counts as 'red hair'
    assert common_tags(captions, skip=["trig"]) == {"red hair", "smile", "hat"}
    assert common_tags(captions, common_share=0.5, skip=["trig"]) == {"red hair"}    # needs 2 of 3
    assert tag_recall([{"red hair"}], {"red hair", "hat"}) == 0.5


BLUE, ORANGE, WHITE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E), (255, 255, 255)


def _colours_near(image, x: float, y: float, reach: int = 2) -> set:
    return {image.getpixel((round(x) + dx, round(y) + dy)) for dx in range(-reach, reach + 1)
            for dy in range(-reach, reach + 1)}


def test_loss_chart_draws_with_and_without_data():
    empty = loss_chart([], [])
    assert empty.size == (640, 260)
    image = loss_chart([1.0, 0.5, float("nan"), 0.25], [1e-4, 1e-4, 5e-5, 1e-5])
    assert image.size == (640, 260)
    # Plot box (56, 24)-(576, 232) of a 640x260 chart; step i of 4 at x = 56 + 520 * i / 3. Loss spans
    # 0.25..1 bottom to top: step 1 at (56, 24), step 2 at (229.3, 162.7), step 4 at (576, 232); the NaN
    # step 3 is left out, so the line goes straight from step 2 to step 4. The LR (1e-5..1e-4) runs
    # from (229.3, 24) to step 3 at (402.7, 139.6).
    blue_points = [(142.7, 93.3), (402.7, 197.3)]      # middles of the two loss segments
    orange_points = [(316.0, 81.8)]                    # middle of the LR's falling segment
    for x, y in blue_points + orange_points:
        assert _colours_near(empty, x, y) == {WHITE}, (x, y)
    for x, y in blue_points:
        assert BLUE in _colours_near(image, x, y), (x, y)
    for x, y in orange_points:
        assert ORANGE in _colours_near(image, x, y), (x, y)
    assert BLUE not in _colours_near(image, 402.7, 232 - 208 * 0.25 / 0.75)   # not drawn to where 0.5 would be
