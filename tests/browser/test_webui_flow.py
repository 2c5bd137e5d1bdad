"""The tab as the WebUI serves it, in a real browser (Debian chromium + Playwright).

The stand-in WebUI server (tests/webui_stub/webui.py) loads scripts/train_lora.py like the
WebUI's script loader, renders its on_ui_tabs tab beside a txt2img tab, injects javascript/
and style.css into the page, and serves /internal/progress from the stand-in's
modules/progress.py; the loaded checkpoint is the tiny ldm model. Checked here, in the page:
- Start goes through the WebUI's progress protocol: a "task(...)" id from randomId(), polled on
  /internal/progress by requestProgress, whose bar shows the run's one-line status, then goes;
- the run finishes, its sample images appear in the tab and are kept beside the run;
- the epoch x weight grid is rendered by the WebUI's txt2img (modules.processing, asked for
  `<lora:name-00000N:w>`) and shown;
- edits are saved by one debounced request and survive a page reload.
Screenshots go to tests/artifacts/browser/webui_*.png.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest
from PIL import Image

from tests.browser.helpers import (HAVE_CHROMIUM, NO_CHROMIUM, REPO, free_port, launch_chromium, sd_scripts_toml,
                                   shot, stop, wait_for_server, wait_text)

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.skipif(not HAVE_CHROMIUM, reason=NO_CHROMIUM)]
NAME = "webui_lora"


def make_dataset(root) -> str:
    concept = root / "datasets" / "cat" / "2_lrsq"
    concept.mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (64, 64), (200 - i * 30, 40 + i * 30, 60)).save(concept / f"img{i}.png")
        (concept / f"img{i}.txt").write_text("lrsq, red theme, sitting", encoding="utf-8")
    return str(concept.parent)


@pytest.fixture(scope="module")
def webui_served(tmp_path_factory):
    root = tmp_path_factory.mktemp("webui_root")
    train_dir = make_dataset(root)
    port = free_port()
    env = dict(os.environ, TRAIN_LORA_STUB_ROOT=str(root), HF_HUB_OFFLINE="1", GRADIO_ANALYTICS_ENABLED="False")
    log = open(root / "server.log", "w", encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "webui_stub" / "webui.py"), "--port", str(port)],
                            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_server(port, proc)
        yield SimpleNamespace(url=f"http://127.0.0.1:{port}/", root=root, train_dir=train_dir,
                              lora_dir=root / "models" / "Lora", data_dir=root / "train_lora")
    finally:
        stop(proc)
        log.close()
    # the WebUI swallows a failing callback, script or request into errors.report: its log must hold none
    swallowed = [line for line in (root / "server.log").read_text(encoding="utf-8").splitlines()
                 if line.startswith(("Error executing callback", "Error loading script", "Error completing request"))]
    assert not swallowed, "\n".join(swallowed)


def open_section(page, name: str) -> None:
    page.get_by_role("button", name=name, exact=True).click()


def test_tab_served_by_the_webui(webui_served, tmp_path):
    from playwright.sync_api import sync_playwright
    w = webui_served
    with sync_playwright() as pw:
        browser = launch_chromium(pw)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        progress = {"asked": [], "answers": []}
        page.on("request", lambda r: progress["asked"].append(r.post_data_json)
                if r.url.endswith("/internal/progress") else None)
        page.on("response", lambda r: progress["answers"].append(r.json())
                if r.url.endswith("/internal/progress") and r.ok else None)
        page.goto(w.url)
        open_section(page, "Train LoRA")                    # the WebUI's tab row: txt2img comes first
        open_section(page, "Train")
        fill_the_form(page, tmp_path, w.train_dir)
        train_and_watch(page, w, progress)
        draw_the_grid(page, w)
        check_form_memory(page)
        browser.close()


def fill_the_form(page, tmp_path, train_dir: str) -> None:
    """An sd-scripts config for the bulk, then typed edits in the basic and advanced options."""
    toml = sd_scripts_toml(tmp_path / "run.toml", train_dir, NAME, enable_bucket="false")
    page.locator("#train_lora_preset_import input[type=file]").set_input_files(str(toml))
    wait_text(page, "#train_lora_train_status", "Imported")
    page.locator("#train_lora_sample_prompts textarea").fill("lrsq, smile")
    page.locator("#train_lora_advanced_options").get_by_text("Advanced options", exact=True).click()
    page.locator("#train_lora_options_sample").get_by_text("Samples", exact=True).click()
    for name, value in (("width", "64"), ("height", "64"), ("steps", "3")):
        page.locator(f"#train_lora_sample_{name} input").fill(value)
    wait_text(page, "#train_lora_steps", "= 8 steps")


def train_and_watch(page, w, progress: dict) -> None:
    page.locator("#train_lora_start").click()
    wait_text(page, "#train_lora_train_status", "started")
    bar = page.locator("#tab_train_lora .progressDiv").filter(has_text="Train LoRA: step")
    bar.first.wait_for(timeout=60_000)                 # requestProgress's bar, fed by shared.state
    shot(page, "webui_1_training")
    wait_text(page, "#train_lora_progress", "finished", timeout_s=90)
    page.locator("#tab_train_lora .progressDiv").first.wait_for(state="detached", timeout=10_000)
    page.wait_for_timeout(2000)                        # one more poll brings the final samples
    shot(page, "webui_2_trained")

    tasks = {body["id_task"] for body in progress["asked"]}
    assert len(tasks) == 1 and re.fullmatch(r"task\(\w+\)", tasks.pop())     # randomId()'s form
    assert any(a["active"] and a["textinfo"].startswith("Train LoRA: step") and 0 < a["progress"] <= 1
               for a in progress["answers"])
    assert progress["answers"][-1]["completed"] or not progress["answers"][-1]["active"]

    assert page.locator("#train_lora_samples img").count() >= 2               # epochs 1 and 2
    kept = sorted(p.name for p in (w.lora_dir / "samples").glob(f"{NAME}-e*-p0.png"))
    assert kept == [f"{NAME}-e000001-p0.png", f"{NAME}-e000002-p0.png"]
    assert (w.lora_dir / f"{NAME}-000001.safetensors").is_file()


def draw_the_grid(page, w) -> None:
    open_section(page, "Evaluate")
    page.locator("#train_lora_eval_refresh").click()
    page.wait_for_timeout(800)
    for name, value in (("width", "64"), ("height", "64"), ("steps", "2")):
        page.locator(f"#train_lora_eval_{name} input").fill(value)
    page.locator("#train_lora_eval_prompts textarea").fill("lrsq, smile")
    page.locator("#train_lora_eval_grid_weights textarea").fill("0.5, 1.0")
    page.locator("#train_lora_grid_button").click()
    wait_text(page, "#train_lora_eval_status", "Grid saved", timeout_s=60)
    page.locator("#train_lora_grid_image img").wait_for(timeout=20_000)
    shot(page, "webui_3_grid")

    asked = page.request.get(w.url + "stand-in/processed").json()["prompts"]
    expected = {"lrsq, smile"} | {f"lrsq, smile <lora:{NAME}-00000{e}:{wt}>" for e in (1, 2) for wt in ("0.5", "1")}
    assert expected <= set(asked), asked                  # every cell went through the WebUI's txt2img
    [grid] = (w.data_dir / "grids").glob(f"{NAME}-grid-*.png")
    width, height = Image.open(grid).size
    assert width > 3 * 64 and height > 2 * 64             # baseline + 2 epochs, 2 weights, plus labels


def check_form_memory(page) -> None:
    """Typing is saved by one request after a pause, and the values come back after a reload."""
    open_section(page, "Train")
    saves = []
    page.on("request", lambda r: saves.append(r.url) if r.url.endswith("/run/predict") else None)
    page.locator("#train_lora_output_output_name textarea").press_sequentially("_v2", delay=60)
    page.locator("#train_lora_sample_steps input").fill("5")
    page.wait_for_timeout(1500)
    assert len(saves) == 1, saves                          # one debounced save for all the typing
    page.reload()
    open_section(page, "Train LoRA")
    open_section(page, "Train")
    page.wait_for_timeout(1500)
    assert page.locator("#train_lora_output_output_name textarea").input_value() == f"{NAME}_v2"
    assert page.locator("#train_lora_sample_steps input").input_value() == "5"
    assert page.locator("#train_lora_training_epochs input").input_value() == "2"
    assert page.locator("#train_lora_sample_prompts textarea").input_value() == "lrsq, smile"
    shot(page, "webui_4_after_reload")
