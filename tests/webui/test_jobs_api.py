"""A run started over the HTTP API trains on the loaded model, reports through shared.state,
writes epochs into the Lora folder, and leaves the model exactly as it was."""
from __future__ import annotations

import os
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from lib_lora.webui.fingerprint import differences, fingerprint
from tests.webui.conftest import load_family


def _dataset(root: str) -> str:
    folder = os.path.join(root, "datasets", "cat", "2_cat")
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = (rng.random((64, 64, 3)) * 255).astype("uint8")
        Image.fromarray(pixels).save(os.path.join(folder, f"{i}.png"))
        with open(os.path.join(folder, f"{i}.txt"), "w", encoding="utf-8") as f:
            f.write("zkcat, shimakaze (azur lane), smile")
    return os.path.dirname(folder)


def _config(train_dir: str) -> dict:
    return {"config": {
        "dataset": {"train_dir": train_dir, "resolution": 64, "enable_bucket": False, "shuffle_caption": False},
        "network": {"dim": 4, "alpha": 4.0, "train_text_encoder": True},
        "training": {"epochs": 2, "batch_size": 1, "optimizer": "AdamW", "unet_lr": 1e-2,
                     "text_encoder_lr": 1e-3, "lr_scheduler": "constant", "lr_warmup": 0.0,
                     "mixed_precision": "no", "min_snr_gamma": 0.0, "gradient_checkpointing": True},
        "output": {"output_name": "apicat", "save_state": True, "tensorboard": False},
    }}


@pytest.fixture()
def client(fresh_state):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from lib_lora.webui import api
    from lib_lora.webui.jobs import RunManager
    from lib_lora.path_policy import PathPolicy
    app = FastAPI()
    manager = RunManager()
    policy = PathPolicy((fresh_state.root,), True, "the HTTP API may only use these folders")
    assert api.register(app, manager, policy=lambda: policy, cmd_opts=SimpleNamespace(api=True, api_auth=None))
    return TestClient(app), manager


def test_api_trains_on_the_loaded_model_and_gives_it_back(client, fresh_state):
    http, manager = client
    webui = fresh_state
    sd_model = load_family(webui, "sd1")
    before = fingerprint(sd_model)
    webui.networks.available_networks.clear()
    started = http.post("/train_lora/v1/runs", json=_config(_dataset(webui.root)))
    assert started.status_code == 200, started.text
    run_id = started.json()["run_id"]
    deadline = time.time() + 120
    while http.get(f"/train_lora/v1/runs/{run_id}").json()["state"] in ("queued", "running"):
        assert time.time() < deadline
        time.sleep(0.2)
    status = http.get(f"/train_lora/v1/runs/{run_id}").json()
    assert status["state"] == "finished", status
    assert status["epoch"] == 2 and status["step"] == status["total_steps"] > 0
    names = sorted(os.path.basename(f) for f in status["files"])
    assert names and all(os.path.dirname(f) == webui.shared.cmd_opts.lora_dir for f in status["files"])
    assert differences(before, fingerprint(sd_model)) == []
    assert [r["run_id"] for r in http.get("/train_lora/v1/runs").json()["runs"]] == [run_id]
    # listed at once (Lora tab, /sdapi/v1/loras), not only after the user presses refresh; the
    # resume state saved beside them is no LoRA and must not be listed as one
    assert {os.path.splitext(n)[0] for n in names} == set(webui.networks.available_networks)
    # the epoch file loads through the (stand-in) built-in Lora with every key matched
    # and changes the image
    stem = os.path.splitext(names[-1])[0]
    plain, with_lora = _generate(webui, "zkcat"), _generate(webui, f"zkcat <lora:{stem}:1>")
    assert not webui.networks.unmatched_keys and plain != with_lora


def _generate(webui, prompt):
    p = webui.processing.StableDiffusionProcessingTxt2Img(prompt=prompt, steps=2, width=16, height=16, seed=1)
    return webui.processing.process_images(p).images[0].tobytes()


@pytest.mark.parametrize("field, value", [("train_dir", "/etc"), ("train_dir", "../../..")])
def test_paths_outside_the_roots_are_rejected(client, field, value):
    http, _ = client
    body = {"config": {"dataset": {field: value}}}
    response = http.post("/train_lora/v1/runs", json=body)
    assert response.status_code == 400 and "outside the allowed folders" in response.json()["detail"]


def test_bad_output_name_and_unknown_run(client, fresh_state):
    http, _ = client
    body = _config(_dataset(fresh_state.root))
    body["config"]["output"]["output_name"] = "../evil"
    assert http.post("/train_lora/v1/runs", json=body).status_code == 400
    assert http.get("/train_lora/v1/runs/nope").status_code == 404
    assert http.post("/train_lora/v1/runs/nope/cancel").status_code == 404


def test_interrupt_stops_and_cancel_of_queued_run(fresh_state):
    from lib_lora.config import TrainConfig
    from lib_lora.webui.jobs import RunManager
    manager = RunManager()
    cfg = TrainConfig()
    record = manager.new_record(cfg)
    manager.cancel(record.run_id)
    assert manager.run_sync(cfg, record).state == "cancelled"


def test_start_takes_the_tabs_hooks_sampler_and_task_id(fresh_state):
    """What the tab's WebUIRunner passes: extra hooks, a sampler made from the borrowed model,
    and the WebUI progress task that the run starts and finishes."""
    from lib_lora import options
    from lib_lora.config import TrainConfig
    from lib_lora.training.hooks import TrainHooks
    from lib_lora.webui.jobs import RunManager
    from modules import progress
    webui = fresh_state
    load_family(webui, "sd1")
    cfg = options.from_dict(TrainConfig, _config(_dataset(webui.root))["config"])
    cfg.training.max_train_steps, cfg.training.epochs = 1, 1

    class Seen(TrainHooks):
        plans = []

        def on_plan(self, plan):
            self.plans.append(plan.total_steps)

    models = []
    record = RunManager().start(cfg, background=False, extra_hooks=[Seen()],
                                sampler=lambda model: models.append(model) or None, task_id="task(train1)")
    assert record.state == "finished", record.error
    assert Seen.plans == [1] and type(models[0]).__name__ == "LdmModel"
    assert "task(train1)" in progress.finished_tasks and "task(train1)" not in progress.pending_tasks
