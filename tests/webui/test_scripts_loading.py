"""scripts/train_lora.py loads the way the WebUI loads extension scripts, builds the tab, and each
callback it registers does its job. The WebUI swallows a callback's exception into
errors.exception_records; tests/webui/conftest.py fails any test that leaves one there."""
from __future__ import annotations

import os
import sys
import time
import types

import numpy as np
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_loads_like_the_webui_and_registers_the_tab(webui):
    path_before = list(sys.path)
    modules = webui.scripts.load_scripts_from(ROOT)
    assert sys.path == path_before                           # extension root only while loading
    assert [m.__name__ for m in modules] == ["train_lora.py"]  # named by basename, as the WebUI does
    assert modules[0].EXTENSION_DIR == ROOT
    tabs = webui.script_callbacks.ui_tabs_callback()
    assert len(tabs) == 1
    blocks, title, elem_id = tabs[0]
    assert (title, elem_id) == ("Train LoRA", "train_lora")
    import gradio as gr
    assert isinstance(blocks, gr.Blocks)


def _builtin_xyz_and_lora(webui, monkeypatch):
    """What the WebUI has loaded before on_before_ui: the built-in X/Y/Z plot script (its module
    with AxisOption and axis_options, registered in scripts.scripts_data) and the built-in Lora's
    `network` module with NetworkModule.apply_weight_decompose (v1.10.1 names)."""
    class AxisOption:
        def __init__(self, label, type, apply, format_value=None, confirm=None, cost=0.0, choices=None):
            self.label = label

    xyz = types.ModuleType("xyz_grid.py")
    xyz.AxisOption, xyz.axis_options = AxisOption, [AxisOption("Nothing", str, lambda p, x, xs: None)]
    xyz.format_value_add_label = lambda p, opt, x: f"{opt.label}: {x}"
    script_class = type("Script", (webui.scripts.Script,), {"__module__": "xyz_grid.py"})
    data = webui.scripts.ScriptClassData(script_class, os.path.join(webui.root, "scripts", "xyz_grid.py"),
                                         webui.root, xyz)
    monkeypatch.setattr(webui.scripts, "scripts_data", [data])

    def apply_weight_decompose(self, updown, orig_weight):
        return updown

    network = types.ModuleType("network")
    network.NetworkModule = type("NetworkModule", (), {"apply_weight_decompose": apply_weight_decompose})
    monkeypatch.setitem(sys.modules, "network", network)
    return xyz, network.NetworkModule, apply_weight_decompose


def test_settings_and_api_register(webui, monkeypatch):
    webui.scripts.load_scripts_from(ROOT)
    webui.script_callbacks.ui_settings_callback()
    labels = webui.shared.opts.data_labels
    assert {"train_lora_allowed_roots", "train_lora_check_vram", "train_lora_pause_minutes"} <= set(labels)
    assert labels["train_lora_check_vram"].section[:2] == ("train_lora", "Train LoRA")
    assert webui.shared.opts.train_lora_check_vram is True and webui.shared.opts.train_lora_pause_minutes == 30
    from fastapi import FastAPI
    app = FastAPI()
    webui.script_callbacks.app_started_callback(None, app)      # no --api: no routes, as the WebUI's own API
    assert not any(getattr(r, "path", "").startswith("/train_lora/") for r in app.routes)
    webui.shared.cmd_opts.api = True
    try:
        app = FastAPI()
        webui.script_callbacks.app_started_callback(None, app)
    finally:
        webui.shared.cmd_opts.api = False
    assert any(getattr(r, "path", "") == "/train_lora/v1/runs" for r in app.routes)
    xyz, network_module, genuine_decompose = _builtin_xyz_and_lora(webui, monkeypatch)
    webui.script_callbacks.before_ui_callback()
    assert [o.label for o in xyz.axis_options] == ["Nothing", "LoRA epoch", "LoRA weight"]
    assert network_module.apply_weight_decompose is not genuine_decompose    # DoRA per output row is read
    assert network_module.apply_weight_decompose.__wrapped__ is genuine_decompose
    webui.script_callbacks.before_ui_callback()                   # the WebUI may call it again: nothing doubles
    assert [o.label for o in xyz.axis_options] == ["Nothing", "LoRA epoch", "LoRA weight"]
    assert webui.errors.exception_records == []


def _dataset(root: str) -> str:
    folder = os.path.join(root, "datasets", "unload", "1_cat")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((64, 64, 3)) * 255).astype("uint8")).save(os.path.join(folder, f"{i}.png"))
        with open(os.path.join(folder, f"{i}.txt"), "w", encoding="utf-8") as f:
            f.write("zkcat, smile")
    return os.path.dirname(folder)


def _long_run(train_dir: str) -> dict:
    """A run far longer than the test waits: it is still training when the scripts unload."""
    return {"config": {
        "dataset": {"train_dir": train_dir, "resolution": 64, "enable_bucket": False},
        "network": {"dim": 2, "alpha": 2.0, "train_text_encoder": False},
        "training": {"epochs": 500, "batch_size": 1, "optimizer": "AdamW", "unet_lr": 1e-3,
                     "lr_scheduler": "constant", "lr_warmup": 0.0, "mixed_precision": "no", "min_snr_gamma": 0.0},
        "output": {"output_name": "unloaded", "save_state": False, "tensorboard": False,
                   "save_every_n_epochs": 1000},
    }}


def _wait(client, run_id: str, done, seconds: float = 120) -> dict:
    deadline = time.time() + seconds
    while True:
        status = client.get(f"/train_lora/v1/runs/{run_id}").json()
        if done(status) or time.time() > deadline:
            return status
        time.sleep(0.1)


def test_unloading_the_scripts_cancels_a_run_in_flight(webui):
    """The WebUI's "Reload UI" unloads every script (on_script_unloaded): a run still training must
    stop, not go on with code that is being replaced."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from tests.webui.conftest import load_family
    load_family(webui, "sd1")
    webui.scripts.load_scripts_from(ROOT)
    app = FastAPI()
    webui.shared.cmd_opts.api = True
    try:
        webui.script_callbacks.app_started_callback(None, app)
    finally:
        webui.shared.cmd_opts.api = False
    client = TestClient(app)
    started = client.post("/train_lora/v1/runs", json=_long_run(_dataset(webui.root)))
    assert started.status_code == 200, started.text
    run_id = started.json()["run_id"]
    running = _wait(client, run_id, lambda s: s["step"] >= 1 or s["state"] not in ("queued", "running"))
    assert running["state"] == "running" and running["step"] >= 1, running
    webui.script_callbacks.script_unloaded_callback()
    ended = _wait(client, run_id, lambda s: s["state"] not in ("queued", "running"))
    assert ended["state"] == "cancelled", ended
    assert ended["stopped_reason"] == "cancelled" and ended["step"] < ended["total_steps"], ended
