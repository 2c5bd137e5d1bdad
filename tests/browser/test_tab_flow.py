"""The whole flow in a real browser: Debian chromium + Playwright against `python -m lib_lora ui`.

Upload a folder -> report -> tag with a tiny WD14-shaped ONNX model -> import an sd-scripts
TOML -> train two epochs on the tiny model -> progress, loss chart, samples -> grid ->
best-epoch hint -> the form survives a reload. Screenshots go to tests/artifacts/.
"""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
from PIL import Image

from tests.browser.helpers import (HAVE_CHROMIUM, NO_CHROMIUM, REPO, free_port, launch_chromium, sd_scripts_toml,
                                   shot, stop, wait_for_server, wait_text)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM)]


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    sys.path.insert(0, str(REPO / "tests" / "fixtures" / "data"))
    from wd14_model import build_model
    data = tmp_path_factory.mktemp("ui_data")
    build_model(data / "models" / "wd14_tagger" / "tiny_wd14", size=64)
    photos = tmp_path_factory.mktemp("photos")
    for i in range(4):      # red scenes: the tiny tagger calls them hatsune_miku
        Image.new("RGB", (64, 64), (200 + i * 10, 30, 20)).save(photos / f"img{i}.png")
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "lib_lora", "ui", "--port", str(port), "--data-dir", str(data)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_server(port, proc)
        yield f"http://127.0.0.1:{port}/", data, photos
    finally:
        stop(proc)


def test_whole_flow(served, tmp_path):
    from playwright.sync_api import sync_playwright
    url, data, photos = served
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(url)
        page.locator("#train_lora_dataset_dir").wait_for(timeout=60_000)

        # Dataset: upload a folder, see the report
        page.locator("#train_lora_upload_concept textarea").fill("lrsq")
        page.locator("#train_lora_upload_repeats input").fill("2")
        page.locator("#train_lora_upload_folder input[type=file]").set_input_files(str(photos))
        page.wait_for_timeout(1500)
        page.locator("#train_lora_upload_button").click()
        wait_text(page, "#train_lora_dataset_status", "Imported 4 images")
        wait_text(page, "#train_lora_dataset_report", "4 images")
        train_dir = page.locator("#train_lora_dataset_dir textarea").input_value()
        assert train_dir.endswith("train")
        shot(page, "1_dataset_report")

        # Tagging with the tiny ONNX tagger (the first local model is preselected)
        page.get_by_role("button", name="Tagging", exact=True).click()
        page.locator("#train_lora_tag_button").click()
        wait_text(page, "#train_lora_tagging_status", "Tagged 4 images")
        assert "hatsune miku" in page.locator("#train_lora_tag_summary textarea").input_value()
        shot(page, "2_tagged")

        # Train: import an sd-scripts config, add a sample prompt, start
        page.get_by_role("button", name="Train", exact=True).click()
        toml = sd_scripts_toml(tmp_path / "run.toml", train_dir, "browser_lora", min_bucket_reso=64,
                           max_bucket_reso=128, bucket_reso_steps=32)
        page.locator("#train_lora_preset_import input[type=file]").set_input_files(str(toml))
        wait_text(page, "#train_lora_train_status", "Imported")
        assert page.locator("#train_lora_training_epochs input").input_value() == "2"
        page.locator("#train_lora_sample_prompts textarea").fill("lrsq, smile")
        wait_text(page, "#train_lora_steps", "= 8 steps")
        page.locator("#train_lora_start").click()
        wait_text(page, "#train_lora_train_status", "started")
        wait_text(page, "#train_lora_progress", "step", timeout_s=120)
        shot(page, "3_training")
        wait_text(page, "#train_lora_progress", "finished", timeout_s=300)
        page.wait_for_timeout(2500)          # one more poll brings the final chart and samples
        assert page.locator("#train_lora_loss_chart img").count() == 1
        assert page.locator("#train_lora_samples img").count() >= 2
        shot(page, "4_trained")

        # Evaluate: grid and best-epoch hint
        page.get_by_role("button", name="Evaluate", exact=True).click()
        page.locator("#train_lora_eval_refresh").click()
        page.wait_for_timeout(1000)
        for name, value in (("width", "64"), ("height", "64"), ("steps", "4")):
            page.locator(f"#train_lora_eval_{name} input").fill(value)
        page.locator("#train_lora_eval_grid_weights textarea").fill("0.5, 1.0")
        page.locator("#train_lora_grid_button").click()
        wait_text(page, "#train_lora_eval_status", "Grid saved", timeout_s=240)
        page.locator("#train_lora_grid_image img").wait_for(timeout=30_000)
        page.locator("#train_lora_best_button").click()
        wait_text(page, "#train_lora_best_epoch", "Recommended", timeout_s=120)
        shot(page, "5_grid_and_hint")
        grids = list((data / "grids").glob("browser_lora-grid-*.png"))
        assert grids and Image.open(grids[0]).size[0] > 3 * 64

        # Options survive a reload
        page.reload()
        page.get_by_role("button", name="Train", exact=True).wait_for(timeout=60_000)
        page.get_by_role("button", name="Train", exact=True).click()
        page.wait_for_timeout(1500)
        assert page.locator("#train_lora_training_epochs input").input_value() == "2"
        assert page.locator("#train_lora_output_output_name textarea").input_value() == "browser_lora"
        shot(page, "6_after_reload")
        browser.close()
